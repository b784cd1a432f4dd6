"""bgpo.tokenizer: ids, round trips, the LLaDA chat template, save/load."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bgpo import tokenizer as T
from bgpo.tokenizer import build_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "llada-8b-instruct"
COUNTDOWN = ("Using the numbers [3, 5, 7], create an equation that equals 56.\n"
             "<reasoning>5 + 3 = 8, 8 * 7 = 56</reasoning>\n<answer>(5 + 3) * 7</answer>")
SUDOKU = "Solve: 1020\n0301\n3000\n0013 -> <answer>1324243131424213</answer>"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_special_ids_and_size(tok):
    assert len(tok) == T.VOCAB_SIZE == 108
    assert (tok.eos_token_id, tok.pad_token_id, tok.mask_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 0, 1, 2, 6)
    assert tok.convert_tokens_to_ids(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]) == [3, 4, 5]
    assert tok.convert_tokens_to_ids(T.TAG_TOKENS) == [7, 8, 9, 10]
    assert tok.padding_side == "left"


@pytest.mark.parametrize("text", [COUNTDOWN, SUDOKU, "  two  spaces\tand tab\n", "(12 - 4) / 2 = 4"])
def test_round_trip_character_level(tok, text):
    ids = tok(text)["input_ids"]
    n_tags = sum(text.count(t) for t in T.TAG_TOKENS)
    assert len(ids) == len(text) - sum(len(t) - 1 for t in T.TAG_TOKENS for _ in range(text.count(t)))
    assert sum(i in (7, 8, 9, 10) for i in ids) == n_tags  # each tag is one token
    assert tok.decode(ids) == text  # no spaces inserted, nothing lost


def test_digits_are_single_tokens_and_unknown_becomes_unk(tok):
    assert tok("0123456789")["input_ids"] == list(range(29, 39))  # "0" = 0x30 -> 11 + 2 + 16
    ids = tok("é=½")["input_ids"]
    assert ids == [6, tok.convert_tokens_to_ids("="), 6]
    assert tok.decode(ids, skip_special_tokens=True) == "="


def test_skip_special_tokens_keeps_tags(tok):
    ids = [T.BOS_ID] + tok("<answer>12</answer>")["input_ids"] + [T.MASK_ID, T.EOS_ID, T.EOS_ID]
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>12</answer>"
    assert tok.decode(ids) == "<|startoftext|><answer>12</answer><|mdm_mask|><|endoftext|><|endoftext|>"


def test_chat_template_matches_llada(tok):
    messages = [{"role": "user", "content": "  Solve 2+2.\n"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nSolve 2+2.<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok(text)["input_ids"]
    assert ids[:3] == [2, 3, tok.convert_tokens_to_ids("u")] and ids[-3:] == [4, 11, 11]
    # bos, header, "user", /header, "\n\n", "Solve 2+2.", eot, header, "assistant", /header, "\n\n"
    assert len(ids) == 1 + 1 + 4 + 1 + 2 + 10 + 1 + 1 + 9 + 1 + 2
    if SHARED.is_dir():  # the real template renders the same text with our specials
        from jinja2 import Template

        real = json.loads((SHARED / "tokenizer_config.json").read_text())["chat_template"]
        assert Template(real).render(messages=messages, bos_token="<|startoftext|>") == text


def test_batch_left_padding(tok):
    batch = tok(["12", "3456"], padding=True)
    assert batch["input_ids"][0][:2] == [T.EOS_ID, T.EOS_ID] and batch["attention_mask"][0] == [0, 0, 1, 1]


def test_save_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(COUNTDOWN)["input_ids"] == tok(COUNTDOWN)["input_ids"]
    assert again.decode(tok(SUDOKU)["input_ids"]) == SUDOKU
    assert (again.mask_token_id, again.eos_token_id, again.pad_token_id, again.padding_side) == (1, 0, 0, "left")
    assert again.chat_template == tok.chat_template
