-- A chapter rendered from a notebook gets a link to download that notebook, under its title: the reader can
-- run the chapter (`project: resources` in _quarto.yml copies the notebooks beside their pages).
function Pandoc(doc)
  local input = quarto.doc.input_file
  if not input:match("%.ipynb$") then
    return doc
  end
  local name = pandoc.path.filename(input)
  local link = pandoc.Link({ pandoc.Str("Download this chapter's notebook"), pandoc.Space(),
                             pandoc.Code(name) }, name, "", { download = name })
  local block = pandoc.Div({ pandoc.Para({ link }) }, { class = "notebook-download" })
  for i, b in ipairs(doc.blocks) do
    if b.t == "Header" and b.level == 1 then  -- the chapter's title: the link goes right under it
      table.insert(doc.blocks, i + 1, block)
      return doc
    end
  end
  table.insert(doc.blocks, 1, block)
  return doc
end
