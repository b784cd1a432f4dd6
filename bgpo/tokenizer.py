"""A character-level tokenizer for the synthetic tasks, shaped like LLaDA-8B-Instruct's.

Why character level: countdown and 4x4 sudoku use a few dozen symbols, so one token per character
keeps the tiny model's vocabulary (~110 ids) and embedding small, and makes every digit its own
prediction. Why LLaDA-shaped: the same special tokens (`<|mdm_mask|>`, `<|endoftext|>` as EOS = PAD,
`<|startoftext|>`, the header/eot markers) and the same chat template as the real 8B tokenizer, so
prompt building, masking and sampling code is one code path for the tiny and the 8B model.

Vocabulary (fixed order, so ids never change between runs):

    0..6    specials: <|endoftext|> <|mdm_mask|> <|startoftext|> <|start_header_id|>
                      <|end_header_id|> <|eot_id|> <unk>
    7..10   whole-word tags (ordinary, not special: they survive `skip_special_tokens=True`):
            <answer> </answer> <reasoning> </reasoning>
    11..    newline, tab, then printable ASCII 0x20..0x7E (space, digits, letters, punctuation)

A character outside the vocabulary encodes to `<unk>` (id 6) instead of failing.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"  # also the padding token, as in LLaDA
MASK_TOKEN = "<|mdm_mask|>"
BOS_TOKEN = "<|startoftext|>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = [EOS_TOKEN, MASK_TOKEN, BOS_TOKEN, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", UNK_TOKEN]
TAG_TOKENS = ["<answer>", "</answer>", "<reasoning>", "</reasoning>"]
CHARACTERS = ["\n", "\t"] + [chr(c) for c in range(0x20, 0x7F)]

EOS_ID = SPECIAL_TOKENS.index(EOS_TOKEN)  # 0 = pad
MASK_ID = SPECIAL_TOKENS.index(MASK_TOKEN)  # 1
BOS_ID = SPECIAL_TOKENS.index(BOS_TOKEN)  # 2
VOCAB_SIZE = len(SPECIAL_TOKENS) + len(TAG_TOKENS) + len(CHARACTERS)  # 108

# LLaDA-8B-Instruct's template, same output: BOS before the first message, each message as
# <|start_header_id|>role<|end_header_id|>\n\n{content | trim}<|eot_id|>, then the assistant header.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

assert set(string.digits + string.ascii_letters + string.punctuation + " \n") <= set(CHARACTERS)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer (no files needed; deterministic ids, see the module docstring).

    `save_pretrained(dir)` writes it and `PreTrainedTokenizerFast.from_pretrained(dir)` (or
    `AutoTokenizer`) reads it back with the same ids, specials and chat template.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + TAG_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    core.decoder = decoders.Fuse()  # join pieces with no separator: decode(encode(s)) == s
    core.add_special_tokens(SPECIAL_TOKENS)  # matched whole before splitting, dropped by skip_special_tokens
    core.add_tokens(TAG_TOKENS)  # matched whole, kept when decoding
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        unk_token=UNK_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[3:6],
        clean_up_tokenization_spaces=False,
        padding_side="left",  # prompts are left-padded for the diffusion sampler
        model_max_length=4096,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
