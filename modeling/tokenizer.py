"""A bilingual (Chinese and English) BPE tokenizer for the house model, trained from our own text.

The design follows Llama's tokenizer: BPE over characters with byte fallback. Every Chinese character seen in
training is a token of its own (and frequent words become merges); a character never seen falls back to its UTF-8
bytes, so nothing is ever [UNK] and no token ends in the middle of a character. Digits are split one by one so
that numbers (doses, ages, lab values) tokenize the same way wherever they appear. Decoding is lossless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
BYTE_TOKENS = tuple(f"<0x{byte:02X}>" for byte in range(256))

DIGITS = "0123456789"
ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
FULL_WIDTH_SYMBOLS = "，。、；：？！“”‘’（）【】《》〈〉「」『』—…～·％＋－＝／０１２３４５６７８９"
INITIAL_ALPHABET = sorted(set(DIGITS + ASCII_PUNCTUATION + FULL_WIDTH_SYMBOLS + " \n"))

# GPT-2's split with single digits: a word with its leading space, one digit, a run of punctuation, whitespace.
# Chinese has no spaces, so a run of Chinese characters is one "word" and BPE learns its words inside it.
SPLIT_PATTERN = r" ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """Train on `texts`; the result adds <s> in front of every encoded text and pads on the left."""
    budget = vocab_size - len(SPECIAL_TOKENS) - len(BYTE_TOKENS)
    if budget < len(INITIAL_ALPHABET):
        raise ValueError(f"vocab_size {vocab_size} is too small: at least {vocab_size - budget + len(INITIAL_ALPHABET)}")

    draft = _with_pipeline(Tokenizer(models.BPE(unk_token=UNK)))
    trainer = trainers.BpeTrainer(
        vocab_size=budget,
        min_frequency=2,
        special_tokens=[],
        initial_alphabet=INITIAL_ALPHABET,
        # Rare characters beyond this many fall back to bytes, leaving room for merges.
        limit_alphabet=max(len(INITIAL_ALPHABET), budget * 3 // 4),
        show_progress=False,
    )
    draft.train_from_iterator(texts, trainer=trainer)
    return _wrap(_with_pipeline(_add_byte_fallback(draft)))


def _with_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def _add_byte_fallback(draft: Tokenizer) -> Tokenizer:
    # The trainer cannot seed ordinary (non-special) tokens, so the 256 byte tokens are put in front afterwards.
    spec = json.loads(draft.to_str())["model"]
    learned = sorted(spec["vocab"].items(), key=lambda item: item[1])
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *BYTE_TOKENS, *(token for token, _ in learned)])}
    merges = [tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge) for merge in spec["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tokenizer


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
