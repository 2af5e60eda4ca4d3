"""Bootstrap medportal-tiny: a small Llama-architecture model trained from scratch on synthetic cases, on the CPU.

``bootstrap_model`` generates bilingual cases from the knowledge base, turns each into a (prompt, target) pair with
the house prompt format, trains a BPE tokenizer and a tiny ``LlamaForCausalLM`` (loss on the answer only), saves
both with ``save_pretrained`` plus ``medportal.json`` (config, training figures, metrics, label set) and measures
top-1 diagnosis accuracy on held-out cases twice: from greedy generations read with ``parse_answer`` (what a doctor
sees) and from ranking the knowledge base's diagnoses in the case's language by the quantity that the engine's
``score_candidates`` computes (the app's ranked differential, with the same engine).
With the defaults the whole run, evaluation included, takes under ten minutes on two CPU cores.

No Django here: the management command ``bootstrap_model`` registers the result.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from modeling.knowledge import Condition, load_conditions, medical_terms
from modeling.prompts import build_prompt, build_training_example, diagnosis_prompt, parse_answer
from modeling.runtime import EngineConfig, GenerationParams, HFEngine
from modeling.synthetic import SyntheticCase, generate_cases
from modeling.tokenizer import train_tokenizer

LANGUAGES = ("zh", "en")
METADATA_FILE = "medportal.json"
IGNORE_INDEX = -100
KEY_FINDINGS = 3
MAX_DIFFERENTIAL = 3
EVAL_SEED_OFFSET = 7919  # held-out cases come from another seed: other draws, other wordings
GROUP_CHUNK_BATCHES = 64  # length grouping sorts this many batches' worth of examples at a time
WARMUP_FRACTION = 0.04
MIN_LR_RATIO = 0.05
ADAM_BETAS = (0.9, 0.98)
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
LOG_EVERY_S = 15.0
CURVE_POINTS = 20  # medportal.json's loss_curve: the mean loss over each twentieth of the run
THREAD_CHOICES = (2, 1)
TUNE_WINDOW_S = 10.0
RETRY_OTHER_AFTER = 6  # windows
EVAL_BATCH_SIZE = 32
NEW_TOKENS_MARGIN = 8


@dataclass
class BootstrapConfig:
    output_dir: Path
    train_cases: int = 12000
    eval_cases: int = 300
    seed: int = 0
    vocab_size: int = 6000
    # Layer sizes stay multiples of 32 so that the checkpoint can also be loaded in 4 bits on a GPU.
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 384
    max_length: int = 512
    batch_size: int = 16
    learning_rate: float = 3e-3
    time_budget_s: float = 480
    max_steps: int | None = None
    # Treatment and prognosis cut to their first clause and at most MAX_DIFFERENTIAL alternatives: on two CPU cores
    # every answer token costs training time and generation time that the diagnosis needs more.
    brief_answers: bool = True


@dataclass
class BootstrapResult:
    output_dir: Path
    steps: int
    train_seconds: float
    final_loss: float
    top1_generate: float
    top1_scored: float
    label_set: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Example:
    """One tokenised training example: ``input_ids`` = prompt (with <s>) + target (with </s>)."""

    input_ids: list[int]
    prompt_length: int


# ---------------------------------------------------------------------------------------------------- data


def case_answer(case: SyntheticCase, condition: Condition, *, brief: bool = True) -> dict:
    """The answer a case teaches: its diagnosis, the other diagnoses to rule out, treatment, course and the key findings.

    ``brief`` keeps the first clause of the treatment and the course and at most MAX_DIFFERENTIAL alternatives.
    """
    findings = key_findings(case, condition)
    if case.language == "zh":
        rationale = "支持点：" + "、".join(findings) + "。" if findings else ""
    else:
        rationale = "Key findings: " + "; ".join(findings) + "." if findings else ""
    differential = [name for name in case.differential if name != case.diagnosis]
    return {
        "diagnosis": case.diagnosis,
        "differential": differential[:MAX_DIFFERENTIAL] if brief else differential,
        "treatment": first_clause(case.treatment, case.language) if brief else case.treatment,
        "prognosis": first_clause(case.course, case.language) if brief else case.course,
        "rationale": rationale,
    }


def first_clause(text: str, language: str) -> str:
    """Up to the first '；'/'。' (Chinese) or '; '/'. ' (English), closed with a full stop."""
    clause = re.split(r"[；;。]" if language == "zh" else r";\s|\.\s|\.$", text.strip(), maxsplit=1)[0].strip()
    return clause + ("。" if language == "zh" else ".") if clause else text.strip()


def key_findings(case: SyntheticCase, condition: Condition, limit: int = KEY_FINDINGS) -> list[str]:
    """Up to ``limit`` of the condition's findings that the case text shows, the most typical (highest weight) first.

    Tests and signs come before symptoms of the same weight: they are what tells look-alike conditions apart.
    """
    kind_rank = {"tests": 0, "signs": 1, "symptoms": 2, "history": 3}
    text = case.text.casefold()
    shown = []
    for kind, rank in kind_rank.items():
        for finding in getattr(condition, kind):
            head = finding.head(case.language)
            if head.casefold() in text:
                shown.append((-finding.weight, rank, head))
    heads: list[str] = []
    for _, _, head in sorted(shown):
        if head not in heads:
            heads.append(head)
    return heads[:limit]


def training_pairs(
    cases: Sequence[SyntheticCase], conditions: Sequence[Condition], *, brief: bool = True
) -> list[tuple[str, str]]:
    """(prompt, target) per case."""
    by_id = {condition.id: condition for condition in conditions}
    pairs = []
    for case in cases:
        answer = case_answer(case, by_id[case.condition_id], brief=brief)
        pairs.append(build_training_example(case.text, answer, case.language))
    return pairs


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str, max_length: int) -> Example:
    """Tokenise a pair the way inference sees it (the prompt alone, with <s>), keeping the end of a prompt that does not fit."""
    return encode_examples(tokenizer, [(prompt, target)], max_length)[0]


def encode_examples(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]], max_length: int) -> list[Example]:
    """``encode_example`` for many pairs, with batched tokenizer calls.

    The target is one text, tokenised as it reads ("Diagnosis: Asthma" gives " Asthma"); ``score_candidates`` moves
    the trailing space of ``diagnosis_prompt`` onto each candidate to match.
    """
    prompts = tokenizer([prompt for prompt, _ in pairs])["input_ids"]
    targets = tokenizer([target for _, target in pairs], add_special_tokens=False)["input_ids"]
    examples = []
    for prompt_ids, target_ids in zip(prompts, targets, strict=True):
        target_ids = [*target_ids[: max_length - 2], tokenizer.eos_token_id]
        room = max_length - len(target_ids)
        if len(prompt_ids) > room:  # keep <s> and the end of the prompt, where the case and the answer header are
            keep_bos = prompt_ids[0] == tokenizer.bos_token_id
            prompt_ids = prompt_ids[:1] * keep_bos + prompt_ids[len(prompt_ids) - room + keep_bos :]
        examples.append(Example(input_ids=prompt_ids + target_ids, prompt_length=len(prompt_ids)))
    return examples


def collate(examples: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels; labels are -100 on the prompt and on padding."""
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        labels[row, example.prompt_length : len(ids)] = ids[example.prompt_length :]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, sorted by length within chunks of GROUP_CHUNK_BATCHES batches, batches shuffled."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * GROUP_CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def label_set(conditions: Sequence[Condition]) -> list[str]:
    """Every condition's display name, Chinese then English, in knowledge-base order."""
    return [condition.display_name(language) for condition in conditions for language in LANGUAGES]


# ---------------------------------------------------------------------------------------------------- training


def learning_rate_at(progress: float, peak: float) -> float:
    """Linear warmup over the first WARMUP_FRACTION of the run, then cosine decay to MIN_LR_RATIO * peak."""
    if progress < WARMUP_FRACTION:
        return peak * max(progress / WARMUP_FRACTION, 0.02)
    decay = min((progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION), 1.0)
    return peak * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * decay)))


def target_loss(model: LlamaForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``model(**batch).loss`` (mean cross-entropy over the labelled positions), with logits for those positions only.

    The output layer is a large share of a tiny model's compute; prompt and padding positions need none of it.
    """
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


class ThreadTuner:
    """Keeps torch on whichever of 2 and 1 intra-op threads trains faster right now, measured, not assumed.

    On two idle cores two threads win (about 1.5x on medportal-tiny). When another process takes a core, OpenMP's
    hand-offs between two threads stall on every small operation and a step can take four times as long as with
    one thread. The machine is shared, so the tuner times each window of TUNE_WINDOW_S seconds, tries the other
    setting when its last measurement is RETRY_OTHER_AFTER windows old, and otherwise keeps the faster one.
    """

    def __init__(self, choices: Sequence[int] = THREAD_CHOICES):
        self.choices = tuple(choices)
        self.rates: dict[int, float] = {}
        self.measured_at: dict[int, int] = {}
        self.windows = 0
        self.threads = self.choices[0]
        torch.set_num_threads(self.threads)

    def report(self, tokens: int, seconds: float) -> int:
        """Record a window's throughput with the current setting; switch if that pays; return the threads now set."""
        self.rates[self.threads] = tokens / max(seconds, 1e-9)
        self.measured_at[self.threads] = self.windows
        self.windows += 1
        stale = [c for c in self.choices if c != self.threads and self.windows - self.measured_at.get(c, -99) > RETRY_OTHER_AFTER]
        chosen = stale[0] if stale else max(self.rates, key=self.rates.__getitem__)
        if chosen != self.threads:
            self.threads = chosen
            torch.set_num_threads(chosen)
        return self.threads

    @property
    def best(self) -> int:
        return max(self.rates, key=self.rates.__getitem__) if self.rates else self.threads


def _train(
    model: LlamaForCausalLM,
    examples: list[Example],
    pad_token_id: int,
    config: BootstrapConfig,
    progress: Callable[[str], None],
    tuner: ThreadTuner,
) -> tuple[float, list[float]]:
    """Train until the time budget or max_steps; return (seconds, the loss of every step)."""
    rng = random.Random(config.seed)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "norm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=ADAM_BETAS,
    )
    lengths = [len(example.input_ids) for example in examples]
    batches: list[list[int]] = []
    losses: list[float] = []
    step, logged, start, last_log = 0, 0, time.monotonic(), time.monotonic()
    tune_start, tune_tokens = start, 0
    model.train()
    while True:
        elapsed = time.monotonic() - start
        # Progress through the schedule: whichever of the step limit and the time budget comes first.
        done = elapsed / config.time_budget_s if config.time_budget_s else 0.0
        if config.max_steps:
            done = max(done, step / config.max_steps)
        if done >= 1.0:
            break
        if not batches:
            batches = length_grouped_batches(lengths, config.batch_size, rng)
        lr = learning_rate_at(done, config.learning_rate)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = collate([examples[i] for i in batches.pop()], pad_token_id)
        loss = target_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(loss.item())
        tune_tokens += batch["input_ids"].numel()
        now = time.monotonic()
        if now - tune_start >= TUNE_WINDOW_S:
            tuner.report(tune_tokens, now - tune_start)
            tune_start, tune_tokens = now, 0
        if now - last_log >= LOG_EVERY_S or step == config.max_steps:
            recent = losses[logged:]
            rates = ", ".join(f"{t} thread{'s' * (t > 1)} {rate:.0f}" for t, rate in sorted(tuner.rates.items())) or "-"
            loss_now = sum(recent) / len(recent)
            progress(f"step {step}  loss {loss_now:.4f}  lr {lr:.2e}  elapsed {now - start:.0f}s  tokens/s: {rates}")
            logged, last_log = step, now
    model.eval()
    return time.monotonic() - start, losses


def loss_curve(losses: Sequence[float], points: int = CURVE_POINTS) -> list[float]:
    """The mean loss over each of ``points`` equal stretches of the run (fewer for a run of fewer steps)."""
    points = min(points, len(losses))
    bounds = [round(i * len(losses) / points) for i in range(points + 1)]
    return [sum(losses[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


# ---------------------------------------------------------------------------------------------------- evaluation


def evaluate(
    output_dir: Path,
    cases: Sequence[SyntheticCase],
    conditions: Sequence[Condition],
    max_new_tokens: int,
    progress: Callable[[str], None] = print,
) -> dict[str, float]:
    """Top-1 diagnosis accuracy of the saved model on ``cases``, from generations and from label scoring."""
    engine = HFEngine.load(EngineConfig(base_model=str(output_dir)), max_batch_size=EVAL_BATCH_SIZE)
    prompts = [build_prompt(case.text, case.language) for case in cases]

    start = time.monotonic()
    generations = engine.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens))
    answers = [parse_answer(g.text, case.language) for g, case in zip(generations, cases, strict=True)]
    hits = sum(answer.diagnosis.strip() == case.diagnosis for answer, case in zip(answers, cases, strict=True))
    complete = sum(answer.complete for answer in answers)
    generate_seconds = time.monotonic() - start
    progress(f"generated {len(cases)} answers in {generate_seconds:.0f}s: top-1 {hits / len(cases):.1%}")

    start = time.monotonic()
    labels = {language: [condition.display_name(language) for condition in conditions] for language in LANGUAGES}
    scored = 0
    for prompt, case in zip(prompts, cases, strict=True):
        names = labels[case.language]
        probabilities = engine.score_candidates(diagnosis_prompt(prompt, case.language), names)
        scored += names[max(range(len(names)), key=probabilities.__getitem__)] == case.diagnosis
    score_seconds = time.monotonic() - start
    progress(f"scored {len(cases)} cases against each language's {len(conditions)} labels in {score_seconds:.0f}s: "
             f"top-1 {scored / len(cases):.1%}")
    return {
        "top1_generate": hits / len(cases),
        "top1_scored": scored / len(cases),
        "complete_answers": complete / len(cases),
        "eval_cases": len(cases),
        "generate_seconds": round(generate_seconds, 1),
        "score_seconds": round(score_seconds, 1),
    }


# ---------------------------------------------------------------------------------------------------- the run


def bootstrap_model(config: BootstrapConfig, progress: Callable[[str], None] = print) -> BootstrapResult:
    """Generate data, train tokenizer and model, save them into ``config.output_dir``, evaluate; see the module doc."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads_before = torch.get_num_threads()
    try:
        return _bootstrap(config, progress, ThreadTuner())
    finally:
        torch.set_num_threads(threads_before)


def _bootstrap(config: BootstrapConfig, progress: Callable[[str], None], tuner: ThreadTuner) -> BootstrapResult:
    torch.manual_seed(config.seed)
    started = time.monotonic()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    conditions = load_conditions()
    cases = generate_cases(config.train_cases, seed=config.seed, languages=LANGUAGES)
    pairs = training_pairs(cases, conditions, brief=config.brief_answers)
    texts = [text for pair in pairs for text in pair] + medical_terms()
    tokenizer = train_tokenizer(texts, vocab_size=config.vocab_size)
    tokenizer.model_max_length = config.max_length
    examples = encode_examples(tokenizer, pairs, config.max_length)
    target_lengths = [len(example.input_ids) - example.prompt_length for example in examples]
    progress(
        f"{len(examples)} training examples, vocabulary {len(tokenizer)}, "
        f"{sum(map(len, (e.input_ids for e in examples))) / len(examples):.0f} tokens on average "
        f"(answer {sum(target_lengths) / len(examples):.0f}, longest answer {max(target_lengths)}), "
        f"prepared in {time.monotonic() - started:.0f}s"
    )

    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.heads,
            max_position_embeddings=config.max_length,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    parameters = sum(p.numel() for p in model.parameters())
    progress(f"model: {parameters / 1e6:.1f}M parameters, {config.layers} layers, hidden {config.hidden_size}")
    train_seconds, losses = _train(model, examples, tokenizer.pad_token_id, config, progress, tuner)
    steps, curve = len(losses), loss_curve(losses)
    torch.set_num_threads(tuner.best)
    final_loss = curve[-1] if curve else float("nan")
    progress(f"trained {steps} steps in {train_seconds:.0f}s, final loss {final_loss:.4f}")

    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    labels = label_set(conditions)
    metadata = {
        "name": "medportal-tiny",
        "config": {**asdict(config), "output_dir": str(output_dir)},
        "parameters": parameters,
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "final_loss": final_loss,
        "loss_curve": [round(loss, 4) for loss in curve],
        "threads": {"used_for_evaluation": tuner.best, "tokens_per_second": {t: round(r) for t, r in tuner.rates.items()}},
        "metrics": {},
        "label_set": labels,
    }
    _write_metadata(output_dir, metadata)

    seen = {case.text for case in cases}
    eval_cases = [
        case for case in generate_cases(config.eval_cases, seed=config.seed + EVAL_SEED_OFFSET, languages=LANGUAGES)
        if case.text not in seen  # held out means never trained on, word for word
    ]
    metrics = evaluate(output_dir, eval_cases, conditions, max(target_lengths) + NEW_TOKENS_MARGIN, progress) if eval_cases else {
        "top1_generate": 0.0, "top1_scored": 0.0, "eval_cases": 0,
    }
    metadata["metrics"] = metrics
    metadata["total_seconds"] = round(time.monotonic() - started, 1)
    _write_metadata(output_dir, metadata)
    progress(f"done in {metadata['total_seconds']:.0f}s")
    return BootstrapResult(
        output_dir=output_dir,
        steps=steps,
        train_seconds=train_seconds,
        final_loss=final_loss,
        top1_generate=metrics["top1_generate"],
        top1_scored=metrics["top1_scored"],
        label_set=labels,
    )


def _write_metadata(output_dir: Path, metadata: dict) -> None:
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
