"""The inference engine: load a causal language model (optionally LoRA-adapted and quantised), generate, score.

Workers talk to the `Engine` protocol only; `HFEngine` is the Hugging Face implementation, and a serving backend
can stand in for it later. `get_engine` keeps one loaded engine per process.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from modeling.prompts import END_MARKER

QUANTIZATIONS = ("none", "8bit", "4bit")
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class _DropInt8CastNotice(logging.Filter):
    # bitsandbytes' int8 matmul logs this on every call unless activations are float16, and bfloat16 is the safer
    # choice on the CPU; the cast is internal to the matmul, so the notice is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


_int8_cast_notice_filter = _DropInt8CastNotice()


class ModelLoadError(Exception):
    """A model could not be loaded; the message is meant for the person who configured it."""


@dataclass(frozen=True)
class EngineConfig:
    base_model: str
    adapter: str | None = None
    quantization: str = "none"
    device: str | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    # Generation ends at the first of these strings (kept in the text) or at the end-of-sequence token. A checkpoint
    # that does not emit EOS after the answer format's closing line would otherwise run on to max_new_tokens.
    stop: tuple[str, ...] = (END_MARKER,)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must not be negative, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int  # tokens the model read, after any truncation
    new_tokens: int  # tokens generated before the end-of-sequence token


@dataclass(frozen=True)
class EngineInfo:
    base_model: str
    adapter: str | None
    quantization: str
    device: str
    dtype: str
    context_length: int
    parameters: int


@runtime_checkable
class Engine(Protocol):
    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]: ...

    def score_candidates(self, prompt: str, candidates: list[str]) -> list[float]: ...


class HFEngine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        info: EngineInfo,
        *,
        max_batch_size: int = 32,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.max_batch_size = max_batch_size

    @classmethod
    def load(cls, config: EngineConfig, *, max_batch_size: int = 32) -> HFEngine:
        adapter = _adapter_dir(config.adapter) if config.adapter else None
        model, tokenizer, source, device, dtype = load_model_and_tokenizer(config)
        tokenizer.padding_side = "left"
        if adapter:
            model = _apply_adapter(model, adapter, merge=config.quantization == "none")
        model.eval()
        # Set explicitly so that generate() neither guesses nor warns on every call.
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id

        info = EngineInfo(
            base_model=source,
            adapter=adapter,
            quantization=config.quantization,
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            context_length=context_length(model, tokenizer),
            parameters=sum(p.numel() for p in model.parameters()),
        )
        return cls(model, tokenizer, info, max_batch_size=max_batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def generate(self, prompts: list[str], params: GenerationParams) -> list[Generation]:
        if not prompts:
            return []
        context = self.info.context_length
        if params.max_new_tokens >= context:
            raise ValueError(f"max_new_tokens {params.max_new_tokens} leaves no room for a prompt in a {context}-token context")
        limit = context - params.max_new_tokens
        encoded = [self._truncate_left(ids, limit) for ids in self.tokenizer(list(prompts))["input_ids"]]
        # Chunks of similar length waste less compute on padding; results go back in input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start:start + self.max_batch_size]
            for i, generation in zip(chunk, self._generate_batch([encoded[i] for i in chunk], params), strict=True):
                results[i] = generation
        return results

    def score_candidates(self, prompt: str, candidates: list[str]) -> list[float]:
        """The probability of each candidate after ``prompt``, among the candidates: the softmax of each one's total
        log-probability (the sum over its tokens: log P(candidate | prompt)).

        Not the mean per token: once a model has learnt a label set, a label's later tokens are near-certain given its
        first, so dividing by the length shrinks a long wrong label's doubt toward zero and lets it outrank a short
        right one (on DDXPlus, summing ranked 1.2 points more cases first).

        The prompt runs once; its key/value cache is shared by every candidate (a batch of them at a time), so ranking
        a label set of dozens costs little more than one forward pass of the prompt.
        """
        if not candidates:
            raise ValueError("no candidates to score")
        # Tokenise a prompt's trailing space with each candidate ("Diagnosis: " + "Asthma" → " Asthma"),
        # the way it was tokenised in training, not as a lone space token.
        stripped = prompt.rstrip(" ")
        lead, prompt = prompt[len(stripped):], stripped
        candidate_ids = [self.tokenizer(lead + c, add_special_tokens=False)["input_ids"] for c in candidates]
        if any(not ids for ids in candidate_ids):
            raise ValueError("a candidate is empty")
        longest = max(len(ids) for ids in candidate_ids)
        if longest >= self.info.context_length:
            raise ValueError(f"a candidate of {longest} tokens does not fit the {self.info.context_length}-token context")
        prompt_ids = self._truncate_left(self.tokenizer(prompt)["input_ids"], self.info.context_length - longest)

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prompt_ids], device=self.device), use_cache=True, logits_to_keep=1)
            first = out.logits[0, -1].float().log_softmax(dim=-1)  # the log-probabilities of every candidate's 1st token
            totals = []
            for start in range(0, len(candidate_ids), self.max_batch_size):
                chunk = candidate_ids[start:start + self.max_batch_size]
                totals.append(self._total_log_probs(out.cache, first, len(prompt_ids), chunk))
        return torch.cat(totals).softmax(dim=0).tolist()

    def _generate_batch(self, batch: list[list[int]], params: GenerationParams) -> list[Generation]:
        inputs = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt").to(self.device)
        # Explicit values override whatever sampling defaults the model's generation_config.json ships with.
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        else:
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if params.stop:
            sampling |= {"stop_strings": list(params.stop), "tokenizer": self.tokenizer}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=params.max_new_tokens, **sampling)
        new = output[:, inputs["input_ids"].shape[1]:].tolist()
        # A sequence that stopped early (EOS, or a stop string) is padded to the batch's length.
        stops = {*_as_list(self.model.generation_config.eos_token_id), self.tokenizer.pad_token_id}
        generations = []
        for prompt, tokens in zip(batch, new, strict=True):
            end = next((j for j, token in enumerate(tokens) if token in stops), len(tokens))
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
            generations.append(Generation(text=text, prompt_tokens=len(prompt), new_tokens=end))
        return generations

    def _total_log_probs(
        self, prompt_cache, first: torch.Tensor, prompt_length: int, candidate_ids: list[list[int]]
    ) -> torch.Tensor:
        """Each candidate's total log-probability, its tokens after the first run on a copy of the prompt's cache."""
        width = max(len(ids) for ids in candidate_ids) - 1
        firsts = torch.stack([first[ids[0]] for ids in candidate_ids])
        if width == 0:
            return firsts.cpu()
        rows = len(candidate_ids)
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(rows)
        # Right padding after the prompt: row r's tokens (all but its last) sit at positions prompt_length.., padding
        # masked out; each position predicts the candidate's next token.
        inputs = torch.full((rows, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((rows, prompt_length + width), dtype=torch.long)
        mask[:, :prompt_length] = 1
        for row, ids in enumerate(candidate_ids):
            if len(ids) > 1:
                inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1], dtype=torch.long)
                mask[row, prompt_length : prompt_length + len(ids) - 1] = 1
        positions = torch.arange(prompt_length, prompt_length + width).expand(rows, -1)
        logits = self.model(input_ids=inputs.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=positions.to(self.device), cache=cache).logits
        log_probs = logits.float().log_softmax(dim=-1)
        totals = []
        for row, ids in enumerate(candidate_ids):
            total = firsts[row].to(log_probs.device)
            if len(ids) > 1:
                rest = torch.tensor(ids[1:], device=log_probs.device)
                total = total + log_probs[row, : len(ids) - 1].gather(-1, rest[:, None]).sum()
            totals.append(total)
        return torch.stack(totals).cpu()

    def _truncate_left(self, ids: list[int], limit: int) -> list[int]:
        """Keep the end of a prompt (where the question and the answer's start are), and the leading <s> if any."""
        if len(ids) <= limit:
            return ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids[0] == bos:
            return [bos, *ids[len(ids) - limit + 1:]]
        return ids[len(ids) - limit:]


def load_model_and_tokenizer(
    config: EngineConfig,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, torch.device, torch.dtype]:
    """The base model (quantised as asked, on its device) and its tokenizer (with a pad token), without any adapter.

    Returns (model, tokenizer, resolved source, device, dtype); every failure is a ModelLoadError for people.
    Inference (``HFEngine.load``) and training (``modeling.training``) load models the same way through this.
    """
    if config.quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantisation {config.quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    # Per-shard "Loading weights" bars fill worker logs with carriage returns; the caller reports progress itself.
    transformers_logging.disable_progress_bar()
    source = _model_source(config.base_model)
    device = _device(config.device)
    if config.quantization == "4bit" and device.type != "cuda":
        raise ModelLoadError(
            "4-bit quantisation needs a CUDA GPU: bitsandbytes 4-bit is not supported on this machine's CPU. "
            "Use quantization='8bit' (runs on the CPU) or 'none'."
        )
    dtype = _dtype(config.dtype, device, config.quantization)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer from {source}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _load_model(source, config.quantization, device, dtype), tokenizer, source, device, dtype


_engine_lock = threading.Lock()
_engine: tuple[EngineConfig, HFEngine] | None = None


def get_engine(config: EngineConfig) -> HFEngine:
    """The process's engine for `config`: loaded once and reused; another config replaces (and frees) it."""
    global _engine
    with _engine_lock:
        if _engine is not None and _engine[0] == config:
            return _engine[1]
        _release()
        engine = HFEngine.load(config)
        _engine = (config, engine)
        return engine


def release_engine() -> None:
    """Free the process's engine (memory, GPU memory) if one is loaded."""
    with _engine_lock:
        _release()


def _release() -> None:
    global _engine
    if _engine is None:
        return
    _engine = None
    # Freed before the next load, so that two models never have to fit in memory at once.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _model_source(base_model: str) -> str:
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model files missing at {path.resolve()}: no config.json in the folder")
        return str(path.resolve())
    if HUB_ID.match(base_model) and not path.is_absolute() and not os.environ.get("HF_HUB_OFFLINE"):
        return base_model
    raise ModelLoadError(f"model files missing at {path.resolve()}")


def _adapter_dir(adapter: str) -> str:
    path = Path(adapter).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter files missing at {path}: expected a LoRA adapter folder with adapter_config.json")
    return str(path)


def _device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {requested!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {requested!r} asked for, but this machine has no usable CUDA GPU")
    return device


def _dtype(requested: str | None, device: torch.device, quantization: str) -> torch.dtype:
    if requested is not None:
        if requested not in DTYPES:
            raise ModelLoadError(f"unknown dtype {requested!r}: use float32, float16 or bfloat16")
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # For 8-bit, bfloat16 keeps float32's range in the layers bitsandbytes leaves unquantised, at half the memory,
    # and ran faster than float32 here (the int8 matmul casts its input to float16 either way).
    return torch.bfloat16 if quantization == "8bit" else torch.float32


def _load_model(source: str, quantization: str, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    if quantization == "8bit":
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_int8_cast_notice_filter)
    quantization_config = {
        "none": None,
        "8bit": BitsAndBytesConfig(load_in_8bit=True),
        "4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype),
    }[quantization]
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, device_map={"": device}, quantization_config=quantization_config
        )
    except OSError as exc:
        raise ModelLoadError(f"model files missing or unreadable at {source}: {exc}") from exc
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(f"not enough memory on {device} for the model at {source}; try a smaller quantisation") from exc
    except (RuntimeError, ValueError, AssertionError) as exc:
        if quantization == "none":
            raise ModelLoadError(f"could not load the model at {source}: {exc}") from exc
        raise ModelLoadError(
            f"could not quantise the model at {source} to {quantization} ({exc}): bitsandbytes cannot pack some of its "
            "layer sizes (multiples of 32 are safe); use another quantisation or none"
        ) from exc


def _apply_adapter(model: PreTrainedModel, adapter: str, *, merge: bool) -> PreTrainedModel:
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"the adapter at {adapter} does not fit this base model: {exc}") from exc
    # Merged weights run as fast as the base model; a quantised base keeps the adapter separate (merging is lossy).
    return model.merge_and_unload() if merge else model


def context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    config = model.config
    lengths = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    # Tokenizers without a limit report a huge sentinel (about 1e30).
    lengths = [n for n in lengths if isinstance(n, int) and 0 < n < 10**7]
    if not lengths:
        raise ModelLoadError("the model declares no context length (max_position_embeddings)")
    return min(lengths)


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
