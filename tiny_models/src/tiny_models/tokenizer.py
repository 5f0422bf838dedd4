"""A Qwen-style byte-level BPE tokenizer trained locally, for the tiny offline models.

Nothing here downloads: the vocabulary is trained on a small synthetic corpus with Qwen2's exact
pre-tokenization (NFC, Qwen's split regex, byte-level), and Qwen's special tokens are appended in
Qwen's order so the relative id layout and ``special`` flags match the real tokenizer. Heavy
imports (tokenizers, transformers) happen inside the functions.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer

# Qwen2/2.5 special tokens, in the order of the real vocabulary (ids 151643...).
QWEN2_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN2_NON_SPECIAL = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN3_NON_SPECIAL = ["<tool_response>", "</tool_response>", "<think>", "</think>"]

# The Qwen-Image-Edit(-Plus) text-encoder system prompt: with the role header it must tokenize to
# exactly the 64-token prefix the pipeline drops (prompt_template_encode_start_idx), as with the
# real tokenizer.
_EDIT_SYSTEM = (
    "Describe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. "
    "Generate a new image that meets the user's requirements while maintaining consistency with "
    "the original input where appropriate."
)
_SUBJECTS = [
    "the cat",
    "a red car",
    "the sky",
    "an old house",
    "the woman",
    "a small boat",
    "the tree",
    "the dog",
    "a glass of water",
    "the mountain",
    "the child",
    "a wooden table",
    "the city",
    "the bird",
    "a blue cup",
    "the river",
    "the man",
    "a yellow flower",
    "the bridge",
    "the road",
]
_VERBS = [
    "make",
    "turn",
    "change",
    "replace",
    "remove",
    "add",
    "paint",
    "move",
    "rotate",
    "color",
    "blur",
    "sharpen",
    "brighten",
    "darken",
    "resize",
    "freeze",
    "melt",
    "burn",
    "break",
    "fill",
]
_OBJECTS = [
    "into a watercolor painting",
    "red",
    "with snow on it",
    "in the style of van gogh",
    "at night",
    "under heavy rain",
    "with a hat",
    "made of glass",
    "on fire",
    "in the water",
    "bigger",
    "smaller",
    "to the left",
    "upside down",
    "covered in moss",
    "as a cartoon",
    "with the text hello",
    "in black and white",
    "with a shadow",
    "reflected in a mirror",
]
_JUDGE_WORDS = (
    "You are a professional digital artist. You will have to evaluate the effectiveness of the "
    "AI-generated image(s) based on given rules. All the input images are AI-generated. "
    "Rate from 0 to 10. Score: editing success, over-editing, naturalness, artifacts, overall. "
    "Source image: Edited image: instruction category reasoning score 0 1 2 3 4 5 6 7 8 9 10"
)


def _corpus() -> list[str]:
    """A deterministic synthetic corpus: edit instructions, the system prompts, judge wording."""
    lines = [
        f"{v} {s} {o}."
        for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)
        if (len(s) + len(v) + len(o)) % 3 == 0
    ]
    lines += [_EDIT_SYSTEM, _JUDGE_WORDS, "Picture 1: Picture 2: Picture 3:"] * 50
    # Chat-template role names start a line, so they must be whole tokens without a leading space.
    lines += ["system\n", "user\n", "assistant\n"] * 50
    lines += ["把天空变成红色。", "去掉图片中的猫。", "物理 风格 文字 移除 添加 替换"] * 20
    return lines


def build_qwen_tokenizer(*, qwen3: bool) -> Qwen2Tokenizer:
    """Train the tiny tokenizer: Qwen2.5-VL's special tokens, plus Qwen3's when ``qwen3``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = bpe.get_vocab()  # token -> id, ids 0..n-1
    vocab = dict(sorted(model.items(), key=lambda kv: kv[1]))
    merges = _merges_of(bpe)

    added = QWEN2_SPECIAL + QWEN2_NON_SPECIAL + (QWEN3_NON_SPECIAL if qwen3 else [])
    base = len(vocab)
    for i, token in enumerate(added):
        vocab[token] = base + i

    # Qwen's own settings; transformers' annotations do not admit merge pairs or no unk token.
    settings: dict[str, Any] = {
        "vocab": vocab,
        "merges": merges,
        "unk_token": None,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "extra_special_tokens": QWEN2_SPECIAL,
        "model_max_length": 262144 if qwen3 else 131072,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }
    tokenizer = Qwen2Tokenizer(**settings)
    # As in Qwen's own tokenizers, the non-special tokens (<tool_call>, <think>...) are added
    # tokens too: matched whole wherever they appear in a text, with the ids given above.
    tokenizer.add_tokens(
        [
            AddedToken(token, special=False, normalized=False)
            for token in QWEN2_NON_SPECIAL + (QWEN3_NON_SPECIAL if qwen3 else [])
        ]
    )
    return tokenizer


def _merges_of(bpe: object) -> list[tuple[str, str]]:
    """The trained merges, read back from the tokenizer's JSON (the Python API has no getter)."""
    import json

    data = json.loads(bpe.to_str())  # type: ignore[attr-defined]
    merges = data["model"]["merges"]
    pairs = []
    for merge in merges:
        first, second = merge.split(" ", 1) if isinstance(merge, str) else merge[:2]
        pairs.append((first, second))
    return pairs


def tiny_vocab_size(tokenizer: Qwen2Tokenizer) -> int:
    """The embedding size for a tiny model: len(tokenizer) padded to a multiple of 128."""
    return (len(tokenizer) + 127) // 128 * 128


def build_clip_tokenizer() -> Any:
    """A CLIP tokenizer (FLUX's first text encoder) over single characters: CLIP's own
    pre-tokenization and specials, every byte-level character a token (with and without
    CLIP's end-of-word ``</w>``), no merges. Reads 77 tokens, as CLIP does."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
        vocab[f"{char}</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_t5_tokenizer() -> Any:
    """A T5 tokenizer (FLUX's second text encoder): a unigram model over characters and
    word-initial characters (``▁a``), with T5's specials in T5's ids (pad 0, eos 1, unk 2)."""
    import string

    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces += [(char, -3.0), (f"▁{char}", -3.5)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
