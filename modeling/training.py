"""LoRA fine-tuning of a causal LM on labelled cases: SFT, medical-term-weighted loss, knowledge distillation. No Django.

One run is one ``FineTuneRun`` driven by a ``TrainConfig``: ``setup`` (data, model, adapter, teacher, optimiser;
resume), ``train`` (the loop: log, evaluate, keep the best adapter, checkpoint, stop when asked), ``save_checkpoint``
and ``cleanup``. The CLI (``python -m modeling.train``) and the product's training task both drive it.

The loss is on the answer tokens only (the prompt and padding carry label -100), in the prompt format that inference
uses. Batches group examples of similar length (``bootstrap.length_grouped_batches``) instead of padding all of them
to ``max_length``, and logits are computed for the answer positions only. With ``term_weight`` w ≠ 1 every answer
token that falls inside a medical term of the lexicon weighs w and the loss is Σ wᵢ·CEᵢ / Σ wᵢ (w = 1 is plain
cross-entropy). With a teacher the loss is α·T²·KL + (1−α)·CE, where KL is the divergence of the student's
temperature-T distribution from the teacher's, KL(teacher_T ‖ student_T) = Σ p_teacher · (log p_teacher − log
p_student) — Hinton et al.'s distillation term, ``F.kl_div(log p_student, p_teacher)`` — averaged over answer tokens.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from modeling.bootstrap import IGNORE_INDEX, Example, collate, encode_examples, length_grouped_batches
from modeling.dataprep import load_training_data, record_pair
from modeling.knowledge import medical_terms
from modeling.runtime import QUANTIZATIONS, EngineConfig, ModelLoadError, context_length, load_model_and_tokenizer

STATE_FILE = "trainer_state.json"
SUMMARY_FILE = "training.json"
CHECKPOINT_PREFIX = "checkpoint-"
BEST_DIR = "best"
BEST_FILE = "best.json"  # in best/: the step and evaluation loss of the adapter kept there
# A resumed run must see the same weights, data order and train/validation split as the run it continues.
RESUME_MUST_MATCH = (
    "base_model", "finetuning_type", "adapter", "lora_r", "lora_alpha", "target_modules", "quantization", "batch_size",
    "max_length", "train_file", "val_file", "val_fraction", "augment", "augment_copies", "seed", "term_weight",
    "diagnosis_weight", "term_lexicon", "distill_teacher",
)
FINAL_DIR = "final"
REPORT_TO = ("none", "tensorboard", "wandb")
GRAD_CLIP = 1.0
EVAL_BATCH_SIZE = 16
FINETUNING_TYPES = ("auto", "lora", "full")
# "auto": a model this small is fine-tuned whole (LoRA's few parameters cannot hold a new task on it: medportal-tiny
# with LoRA r32 on every projection stayed far below a bag-of-words baseline on DDXPlus); a larger one gets LoRA.
FULL_FINETUNE_MAX_PARAMETERS = 100_000_000
# The learning rate when none is given: whole small models move with a larger one than adapters of large ones.
DEFAULT_LEARNING_RATE = {"lora": 2e-4, "full": 1e-3}


class TrainingError(Exception):
    """A run cannot start or continue; the message is meant for the person who configured it."""


@dataclass
class TrainConfig:
    base_model: str
    train_file: str
    output_dir: str
    val_file: str | None = None
    finetuning_type: str = "auto"
    val_fraction: float = 0.1
    adapter: str | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 512
    learning_rate: float | None = None
    weight_decay: float = 0.0
    warmup_steps: float = 0
    eval_steps: int = 50
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    quantization: str = "none"
    term_weight: float = 1.0
    diagnosis_weight: float = 1.0
    term_lexicon: str | None = None
    distill_teacher: str | None = None
    distill_teacher_adapter: str | None = None
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    augment: bool = False
    augment_copies: int = 1
    seed: int = 0
    resume_from_checkpoint: str | None = None
    report_to: str = "none"
    device: str | None = None

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        problems = []
        positive = ("batch_size", "max_length", "eval_steps", "save_steps", "logging_steps", "lora_r", "lora_alpha",
                    "augment_copies")
        problems += [f"{name} must be at least 1, not {getattr(self, name)}" for name in positive if getattr(self, name) < 1]
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be at least 1, not {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            problems.append(f"epochs must be positive, not {self.epochs}")
        if self.finetuning_type not in FINETUNING_TYPES:
            problems.append(f"finetuning_type must be one of {', '.join(FINETUNING_TYPES)}, not {self.finetuning_type!r}")
        elif self.finetuning_type == "full" and self.adapter:
            problems.append("full fine-tuning trains the whole model; an adapter to continue needs finetuning_type lora")
        elif self.finetuning_type == "full" and self.quantization != "none":
            problems.append("full fine-tuning needs unquantised weights (quantization none); use lora with 8bit/4bit")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be between 0 and 1, not {self.learning_rate}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            problems.append("weight_decay and warmup_steps must not be negative")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), not {self.lora_dropout}")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be between 0 and 1, not {self.val_fraction}")
        if self.quantization not in QUANTIZATIONS:
            problems.append(f"quantization must be one of {', '.join(QUANTIZATIONS)}, not {self.quantization!r}")
        if self.term_weight <= 0:
            problems.append(f"term_weight must be positive, not {self.term_weight}")
        if self.diagnosis_weight <= 0:
            problems.append(f"diagnosis_weight must be positive, not {self.diagnosis_weight}")
        if not 0 <= self.distill_alpha <= 1:
            problems.append(f"distill_alpha must be in [0, 1], not {self.distill_alpha}")
        if self.distill_temperature <= 0:
            problems.append(f"distill_temperature must be positive, not {self.distill_temperature}")
        if self.report_to not in REPORT_TO:
            problems.append(f"report_to must be one of {', '.join(REPORT_TO)}, not {self.report_to!r}")
        if not self.target_modules:
            problems.append("target_modules names no module")
        if problems:
            raise TrainingError("; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(f"unknown training parameter{'s' * (len(unknown) > 1)}: {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}


@dataclass
class TrainEvent:
    kind: str  # "log" | "eval" | "checkpoint" | "done" | "message"
    step: int
    total_steps: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    base_model: str
    steps: int
    total_steps: int
    stopped: bool
    best_eval_loss: float | None
    final_loss: float | None
    last_checkpoint: Path | None
    metrics: dict = field(default_factory=dict)
    finetuning_type: str = "lora"  # "full": adapter_dir holds a whole model (with its tokenizer), not an adapter


@dataclass(frozen=True)
class TrainExample:
    """``Example`` plus one loss weight per answer token (1.0 outside medical terms)."""

    input_ids: list[int]
    prompt_length: int
    weights: tuple[float, ...]


# ---------------------------------------------------------------------------------------------------- data → tensors


class TermMatcher:
    """Finds medical terms in a text: Chinese terms as substrings, Latin-script terms as whole words in any case."""

    def __init__(self, terms: Sequence[str]):
        terms = sorted({term.strip() for term in terms if term.strip()}, key=len, reverse=True)
        latin = [re.escape(term) for term in terms if term.isascii()]
        other = [re.escape(term) for term in terms if not term.isascii()]
        self._patterns = []
        if latin:
            self._patterns.append(re.compile(rf"(?<![A-Za-z])(?:{'|'.join(latin)})(?![A-Za-z])", re.IGNORECASE))
        if other:
            self._patterns.append(re.compile("|".join(other)))

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for pattern in self._patterns for match in pattern.finditer(text)]


def load_lexicon(path: str | None) -> list[str]:
    """The knowledge base's terms plus, optionally, a UTF-8 file of one term per line ('#' starts a comment)."""
    terms = medical_terms()
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise TrainingError(f"term lexicon not found: {path}") from None
        except UnicodeDecodeError:
            raise TrainingError(f"term lexicon {path} is not UTF-8 text") from None
        terms += [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    return terms


def term_weights(tokenizer, targets: Sequence[str], matcher: TermMatcher, weight: float) -> list[list[float]]:
    """Per target, one weight per token of ``tokenizer(target, add_special_tokens=False)``: ``weight`` for a token whose
    characters overlap a term, 1.0 otherwise. Multi-token terms weigh every one of their tokens."""
    return span_weights(tokenizer, targets, matcher.spans, weight, what="term-weighted loss", flag="--term_weight 1")


def diagnosis_span(target: str) -> list[tuple[int, int]]:
    """The answer's first line: its diagnosis section ("Diagnosis: Asthma" / "【诊断】哮喘")."""
    end = target.find("\n")
    return [(0, len(target) if end < 0 else end)]


def span_weights(tokenizer, targets: Sequence[str], spans: Callable[[str], list[tuple[int, int]]], weight: float, *,
                 what: str, flag: str) -> list[list[float]]:
    """Per target, ``weight`` for each token whose characters overlap one of ``spans(target)``, 1.0 for the others."""
    if not getattr(tokenizer, "is_fast", False):
        raise TrainingError(f"{what} needs a fast tokenizer (character offsets); use {flag}")
    encoded = tokenizer(list(targets), add_special_tokens=False, return_offsets_mapping=True)
    weights = []
    for target, offsets in zip(targets, encoded["offset_mapping"], strict=True):
        inside = bytearray(len(target))
        for start, end in spans(target):
            inside[start:end] = b"\x01" * (end - start)
        weights.append([weight if any(inside[a:b]) else 1.0 for a, b in offsets])
    return weights


def encode_training_examples(
    tokenizer, pairs: Sequence[tuple[str, str]], max_length: int, matcher: TermMatcher | None = None, weight: float = 1.0,
    *, diagnosis_weight: float = 1.0,
) -> list[TrainExample]:
    """Tokenised (prompt, target) pairs as inference sees them, with loss weights for the answer tokens: ``weight`` for
    tokens in the matcher's terms, times ``diagnosis_weight`` for those of the diagnosis line."""
    examples = encode_examples(tokenizer, pairs, max_length)
    targets = [target for _, target in pairs]
    factors = []
    if matcher is not None and weight != 1.0:
        factors.append(term_weights(tokenizer, targets, matcher, weight))
    if diagnosis_weight != 1.0:
        factors.append(span_weights(tokenizer, targets, diagnosis_span, diagnosis_weight, what="a diagnosis weight",
                                    flag="--diagnosis_weight 1"))
    if not factors:
        return [TrainExample(e.input_ids, e.prompt_length, (1.0,) * (len(e.input_ids) - e.prompt_length)) for e in examples]
    result = []
    for index, example in enumerate(examples):
        weights = [math.prod(values) for values in zip(*(factor[index] for factor in factors), strict=True)]
        answer_tokens = len(example.input_ids) - example.prompt_length
        kept = weights[: answer_tokens - 1] + [1.0]  # encode_examples cut the target to fit and appended </s>
        result.append(TrainExample(example.input_ids, example.prompt_length, tuple(kept)))
    return result


def collate_weighted(examples: Sequence[TrainExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``bootstrap.collate`` (right padding, labels -100 off the answer) plus ``weights`` aligned with ``labels``."""
    batch = collate([Example(e.input_ids, e.prompt_length) for e in examples], pad_token_id)
    weights = torch.zeros(batch["labels"].shape, dtype=torch.float32)
    for row, example in enumerate(examples):
        weights[row, example.prompt_length : len(example.input_ids)] = torch.tensor(example.weights)
    batch["weights"] = weights
    return batch


# ---------------------------------------------------------------------------------------------------- losses


def _parts(model):
    """(decoder, output layer) of a causal LM, looking through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, labels, keep) for the positions that predict an answer token; logits are computed for those only."""
    decoder, head = _parts(model)
    device = head.weight.device
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    labels = batch["labels"][:, 1:].to(device)
    keep = labels != IGNORE_INDEX
    return head(hidden[:, :-1][keep]).float(), labels[keep], keep


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ wᵢ·CEᵢ / Σ wᵢ over the answer tokens (the mean cross-entropy when every weight is 1)."""
    token_losses = F.cross_entropy(logits, labels, reduction="none")
    weights = weights.to(token_losses.device)
    return (weights * token_losses).sum() / weights.sum()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(teacher_T ‖ student_T), averaged over tokens (T² keeps gradients on the scale of the CE term)."""
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.to(student.device).float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


# ---------------------------------------------------------------------------------------------------- the run


class FineTuneRun:
    def __init__(
        self,
        config: TrainConfig,
        *,
        on_event: Callable[[TrainEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.output_dir = Path(config.output_dir)
        self.step = 0
        self.total_steps = 0
        self.best_eval_loss: float | None = None
        self.best_step: int | None = None
        self.last_checkpoint: Path | None = None
        self.history: list[dict] = []
        self._epoch_order: tuple[int | None, list[list[int]]] = (None, [])  # (epoch, its batches), made when first needed
        self._writer = None
        self._wandb = None

    # ------------------------------------------------------------------------------------------------ setup

    def setup(self) -> None:
        config = self.config
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        checkpoint = self._checkpoint_to_resume()
        self._check_files()
        self.output_dir.mkdir(parents=True, exist_ok=True)

        # A whole-model checkpoint holds the weights to continue from (with the tokenizer); a LoRA one the adapter only.
        full_checkpoint = checkpoint is not None and _saved_config(checkpoint).get("finetuning_type") == "full"
        try:
            self.model, self.tokenizer, self.base_source, self.device, _ = load_model_and_tokenizer(
                EngineConfig(base_model=str(checkpoint) if full_checkpoint else config.base_model,
                             quantization=config.quantization, device=config.device)
            )
        except ModelLoadError as exc:
            raise TrainingError(f"cannot load the base model: {exc}") from None
        if full_checkpoint:
            self.base_source = config.base_model
        self.config = config = self._resolved(config)
        self._prepare_data()
        self._attach_adapter(checkpoint)
        self.teacher = self._load_teacher() if config.distill_teacher else None

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
        )
        self.batches_per_epoch = math.ceil(len(self.train_examples) / config.batch_size)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.batches_per_epoch))
        warmup = config.warmup_steps * self.total_steps if config.warmup_steps < 1 else config.warmup_steps
        self.warmup = int(warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        if checkpoint:
            self._restore(checkpoint)
        self._open_reporting()
        trainable_count = sum(p.numel() for p in trainable)
        total_count = sum(p.numel() for p in self.model.parameters())
        self._message(
            f"{len(self.train_examples)} training and {len(self.val_examples)} validation examples; "
            f"{trainable_count:,} of {total_count:,} parameters trainable ("
            + ("the whole model" if self.full else f"LoRA r={config.lora_r} on {', '.join(config.target_modules)}")
            + f", learning rate {config.learning_rate:g}); {self.total_steps} steps on {self.device}"
            + (f"; resuming at step {self.step}" if checkpoint else "")
        )

    def _resolved(self, config: TrainConfig) -> TrainConfig:
        """``auto`` and an unset learning rate made concrete for the loaded model (and recorded in the checkpoints)."""
        kind = config.finetuning_type
        if kind == "auto":
            small = sum(p.numel() for p in self.model.parameters()) <= FULL_FINETUNE_MAX_PARAMETERS
            kind = "full" if small and not config.adapter and config.quantization == "none" else "lora"
        return dataclasses.replace(config, finetuning_type=kind,
                                   learning_rate=config.learning_rate or DEFAULT_LEARNING_RATE[kind])

    @property
    def full(self) -> bool:
        return self.config.finetuning_type == "full"

    def _save_model(self, path: Path) -> None:
        """The adapter (LoRA) or the whole model with its tokenizer (full), loadable as a version on its own."""
        self.model.save_pretrained(path)
        if self.full:
            self.tokenizer.save_pretrained(path)

    def _check_files(self) -> None:
        config = self.config
        for label, path in (("training file", config.train_file), ("validation file", config.val_file),
                            ("adapter", config.adapter), ("teacher adapter", config.distill_teacher_adapter)):
            if path and not Path(path).exists():
                raise TrainingError(f"{label} not found: {path}")

    def _prepare_data(self) -> None:
        config = self.config
        try:
            train, val = load_training_data(
                config.train_file, config.val_file, val_fraction=config.val_fraction, seed=config.seed, augment=config.augment,
                augment_copies=config.augment_copies,
            )
        except ValueError as exc:  # FileFormatError and RowError (modeling.records) are ValueErrors with a clear message
            raise TrainingError(str(exc)) from None
        if not train:
            raise TrainingError(f"no training examples in {config.train_file}")
        matcher = TermMatcher(load_lexicon(config.term_lexicon)) if config.term_weight != 1.0 else None
        max_length = min(config.max_length, context_length(self.model, self.tokenizer))
        self.train_examples = encode_training_examples(
            self.tokenizer, [record_pair(r) for r in train], max_length, matcher, config.term_weight,
            diagnosis_weight=config.diagnosis_weight,
        )
        self.val_examples = encode_training_examples(self.tokenizer, [record_pair(r) for r in val], max_length)
        self.lengths = [len(example.input_ids) for example in self.train_examples]

    def _attach_adapter(self, checkpoint: Path | None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        config = self.config
        if config.quantization != "none":
            # Casts the unquantised layers to float32 and lets gradients reach the adapters through frozen int8/nf4 ones.
            self.model = prepare_model_for_kbit_training(self.model, use_gradient_checkpointing=self.device.type == "cuda")
        if self.full:
            for parameter in self.model.parameters():
                parameter.requires_grad_(True)
            return
        source = checkpoint or (Path(config.adapter) if config.adapter else None)
        if source is not None:
            try:
                self.model = PeftModel.from_pretrained(self.model, str(source), is_trainable=True)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise TrainingError(f"the adapter at {source} does not fit the base model: {exc}") from None
            return
        present = {name.rsplit(".", 1)[-1] for name, _ in self.model.named_modules()}
        missing = [name for name in config.target_modules if name not in present]
        if missing:
            raise TrainingError(f"the base model has no module named {', '.join(missing)} to adapt")
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(self.model, lora)

    def _load_teacher(self):
        config = self.config
        try:
            teacher, teacher_tokenizer, _, _, _ = load_model_and_tokenizer(
                EngineConfig(base_model=config.distill_teacher, device=str(self.device))
            )
        except ModelLoadError as exc:
            raise TrainingError(f"cannot load the teacher: {exc}") from None
        if teacher_tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise TrainingError(
                f"the teacher ({config.distill_teacher}) and the student ({config.base_model}) do not share a tokenizer; "
                "distillation compares their token distributions, so they must"
            )
        if config.distill_teacher_adapter:
            from peft import PeftModel

            teacher = PeftModel.from_pretrained(teacher, config.distill_teacher_adapter).merge_and_unload()
        teacher.eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return teacher

    def _lr_factor(self, step: int) -> float:
        """Linear warmup, then linear decay to zero at the last step."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup))

    # ------------------------------------------------------------------------------------------------ checkpoints

    def _checkpoint_to_resume(self) -> Path | None:
        requested = self.config.resume_from_checkpoint
        if not requested:
            return None
        if requested == "latest":
            found = checkpoints(self.output_dir)
            if not found:
                raise TrainingError(f"no checkpoint to resume from in {self.output_dir}")
            return found[-1]
        path = Path(requested)
        if not (path / STATE_FILE).is_file():
            raise TrainingError(f"not a checkpoint (no {STATE_FILE}): {path}")
        return path

    def _restore(self, checkpoint: Path) -> None:
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        saved, current = state["config"], self.config.to_dict()
        for key in RESUME_MUST_MATCH:  # what the weights, the data order or the train/validation split depend on
            if saved.get(key) != current.get(key):
                raise TrainingError(
                    f"checkpoint {checkpoint.name} was trained with {key}={saved.get(key)!r}, not {current[key]!r}"
                )
        if state["step"] > self.total_steps:
            raise TrainingError(f"checkpoint {checkpoint.name} is already past this run's {self.total_steps} steps")
        self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt"))
        self.step = state["step"]
        self.best_eval_loss = state["best_eval_loss"]
        self.best_step = state["best_step"]
        best = _best_step(self.output_dir / BEST_DIR)
        if best is not None and best > self.step:
            # best/ holds weights that the interrupted run evaluated after this checkpoint: they are not this run's past.
            shutil.rmtree(self.output_dir / BEST_DIR, ignore_errors=True)
            self.best_eval_loss = self.best_step = None
        self.history = state.get("history", [])
        self.last_checkpoint = checkpoint
        rng = torch.load(checkpoint / "rng.pt", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") and torch.cuda.is_available():  # dropout on the GPU draws from the CUDA generators
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save_checkpoint(self) -> Path:
        path = self.output_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        path.mkdir(parents=True, exist_ok=True)
        self._save_model(path)
        torch.save(self.optimizer.state_dict(), path / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), path / "scheduler.pt")
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        torch.save({"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": cuda}, path / "rng.pt")
        self._write_state(path / STATE_FILE)
        self.last_checkpoint = path
        for old in checkpoints(self.output_dir)[: -self.config.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
        self.on_event(TrainEvent("checkpoint", self.step, self.total_steps, message=f"saved checkpoint {path.name}"))
        return path

    def _write_state(self, path: Path) -> None:
        state = {
            "config": self.config.to_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.step / self.batches_per_epoch,
            "best_eval_loss": self.best_eval_loss,
            "best_step": self.best_step,
            "metrics": self.history[-1] if self.history else {},
            "history": self.history,
        }
        path.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------------------------------------ the loop

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of a global step: epoch ``e`` has its own fixed order, so a resumed run sees what it would have."""
        epoch, index = divmod(step, self.batches_per_epoch)
        if self._epoch_order[0] != epoch:
            rng = random.Random(f"{self.config.seed}:{epoch}")
            self._epoch_order = (epoch, length_grouped_batches(self.lengths, self.config.batch_size, rng))
        rows = self._epoch_order[1][index]
        return collate_weighted([self.train_examples[i] for i in rows], self.tokenizer.pad_token_id)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, labels, keep = answer_logits(self.model, batch)
        ce = weighted_cross_entropy(logits, labels, batch["weights"][:, 1:][keep.cpu()])
        if self.teacher is None:
            return ce
        with torch.no_grad():
            teacher_logits, _, _ = answer_logits(self.teacher, batch)
        # Output layers are often padded past the tokenizer (to a multiple of 64 or 128), differently per model size:
        # compare the distributions over the real tokens only.
        vocabulary = len(self.tokenizer)
        kl = distillation_loss(logits[:, :vocabulary], teacher_logits[:, :vocabulary], self.config.distill_temperature)
        alpha = self.config.distill_alpha
        return alpha * kl + (1 - alpha) * ce

    def evaluate(self) -> float | None:
        """Mean cross-entropy per answer token on the validation examples (None without any)."""
        if not self.val_examples:
            return None
        self.model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(self.val_examples), EVAL_BATCH_SIZE):
                batch = collate_weighted(self.val_examples[start : start + EVAL_BATCH_SIZE], self.tokenizer.pad_token_id)
                logits, labels, _ = answer_logits(self.model, batch)
                total += F.cross_entropy(logits, labels, reduction="sum").item()
                count += labels.numel()
        self.model.train()
        return total / count

    def train(self) -> TrainResult:
        config = self.config
        self.model.train()
        window: list[float] = []
        tokens, started = 0, time.monotonic()
        stopped = False
        while self.step < self.total_steps:
            if self.should_stop():
                stopped = True
                break
            batch = self._batch(self.step)
            loss = self._loss(batch)
            if not torch.isfinite(loss):  # the weights are still those of the last step: keep them, then stop
                self.save_checkpoint()
                raise TrainingError(
                    f"the loss became {loss.item()} at step {self.step + 1}: training diverged; lower the learning rate "
                    f"(now {self.config.learning_rate:g}) and start again (checkpoint-{self.step} holds the weights before it)"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], GRAD_CLIP)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window.append(loss.item())
            tokens += int(batch["attention_mask"].sum())
            if self.step % config.logging_steps == 0 or self.step == self.total_steps:
                self._log(window, tokens / max(time.monotonic() - started, 1e-9))
                window = []
            if self.step % config.eval_steps == 0 or self.step == self.total_steps:
                self._evaluate_and_keep_best()
            if self.step % config.save_steps == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        if window:
            self._log(window, tokens / max(time.monotonic() - started, 1e-9))
        if stopped or self.step == self.total_steps:
            self.save_checkpoint()
        return self._finish(stopped)

    def _log(self, losses: list[float], tokens_per_second: float) -> None:
        loss = sum(losses) / len(losses)
        lr = self.scheduler.get_last_lr()[0]
        self.history.append({"step": self.step, "loss": round(loss, 5), "learning_rate": lr})
        self._report({"train/loss": loss, "train/learning_rate": lr})
        message = f"step {self.step}/{self.total_steps}  loss {loss:.4f}  lr {lr:.2e}  {tokens_per_second:,.0f} tokens/s"
        self.on_event(TrainEvent("log", self.step, self.total_steps, loss=loss, learning_rate=lr, message=message))

    def _evaluate_and_keep_best(self) -> None:
        eval_loss = self.evaluate()
        if eval_loss is None:
            return
        self.history.append({"step": self.step, "eval_loss": round(eval_loss, 5)})
        self._report({"eval/loss": eval_loss})
        better = self.best_eval_loss is None or eval_loss < self.best_eval_loss
        if better:
            self.best_eval_loss, self.best_step = eval_loss, self.step
            self._save_model(self.output_dir / BEST_DIR)
            (self.output_dir / BEST_DIR / BEST_FILE).write_text(json.dumps({"step": self.step, "eval_loss": eval_loss}) + "\n")
        note = "  (best so far, kept)" if better else f"  (best {self.best_eval_loss:.4f} at step {self.best_step})"
        self.on_event(TrainEvent("eval", self.step, self.total_steps, eval_loss=eval_loss,
                                 message=f"step {self.step}  eval loss {eval_loss:.4f}{note}"))

    def _finish(self, stopped: bool) -> TrainResult:
        final_dir = self.output_dir / FINAL_DIR
        self._save_model(final_dir)
        best_dir = self.output_dir / BEST_DIR
        adapter_dir = best_dir if self.best_step is not None and best_dir.is_dir() else final_dir
        losses = [entry["loss"] for entry in self.history if "loss" in entry]
        result = TrainResult(
            output_dir=self.output_dir,
            adapter_dir=adapter_dir,
            base_model=self.base_source,
            steps=self.step,
            total_steps=self.total_steps,
            stopped=stopped,
            best_eval_loss=self.best_eval_loss,
            final_loss=losses[-1] if losses else None,
            last_checkpoint=self.last_checkpoint,
            finetuning_type=self.config.finetuning_type,
            metrics={
                "best_eval_loss": self.best_eval_loss,
                "best_step": self.best_step,
                "final_loss": losses[-1] if losses else None,
                "train_examples": len(self.train_examples),
                "val_examples": len(self.val_examples),
            },
        )
        summary = {**result.metrics, "steps": self.step, "total_steps": self.total_steps, "stopped": stopped,
                   "adapter_dir": str(adapter_dir), "config": self.config.to_dict(), "history": self.history}
        (self.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        what = "stopped" if stopped else "finished"
        self.on_event(TrainEvent("done", self.step, self.total_steps, loss=result.final_loss, eval_loss=self.best_eval_loss,
                                 message=f"{what} at step {self.step}/{self.total_steps}; "
                                 f"{'model' if self.full else 'adapter'} in {adapter_dir}"))
        return result

    # ------------------------------------------------------------------------------------------------ reporting

    def _message(self, text: str) -> None:
        self.on_event(TrainEvent("message", self.step, self.total_steps, message=text))

    def _open_reporting(self) -> None:
        if self.config.report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TrainingError("report_to=tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self._writer = SummaryWriter(log_dir=str(self.output_dir / "runs"))
        elif self.config.report_to == "wandb":
            try:
                import wandb
            except ImportError:
                raise TrainingError("report_to=wandb needs the wandb package (pip install wandb) and a wandb login") from None
            self._wandb = wandb.init(project="medportal", dir=str(self.output_dir), config=self.config.to_dict())

    def _report(self, values: dict[str, float]) -> None:
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, self.step)
        if self._wandb is not None:
            self._wandb.log(values, step=self.step)

    def cleanup(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        for name in ("model", "teacher", "optimizer", "scheduler"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()  # a long-lived worker trains run after run: free this one's tensors before the next loads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _saved_config(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError):
        return {}


def _best_step(best_dir: Path) -> int | None:
    try:
        return json.loads((best_dir / BEST_FILE).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError):
        return None


def checkpoints(output_dir: Path | str) -> list[Path]:
    """The run's checkpoint folders, oldest (lowest step) first."""
    found = [p for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file()]
    return sorted((p for p in found if checkpoint_step(p) is not None), key=checkpoint_step)


def checkpoint_step(path: Path | str) -> int | None:
    """The step a checkpoint folder was saved at (``checkpoint-120`` → 120), or None for another name."""
    number = Path(path).name.removeprefix(CHECKPOINT_PREFIX)
    return int(number) if number.isdigit() and Path(path).name.startswith(CHECKPOINT_PREFIX) else None


def fine_tune(
    config: TrainConfig,
    *,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """setup + train + cleanup."""
    run = FineTuneRun(config, on_event=on_event, should_stop=should_stop)
    try:
        run.setup()
        return run.train()
    finally:
        run.cleanup()
