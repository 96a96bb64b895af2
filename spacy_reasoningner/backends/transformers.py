"""Hugging Face transformers backend: batched ``generate`` with left padding.

The model is loaded lazily (on first use, ``initialize`` or ``from_disk``), so building a
pipeline from a config whose model lives elsewhere costs nothing until it runs, and
``spacy.load`` of a saved pipeline reads the weights from the pipeline folder only.
Constrained answers (``structured_output``) use xgrammar matchers, one compiled grammar per
answer JSON Schema, that also skip the text the grammar forces (``answer_grammars``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..hardware import faster_cpu_dtype
from ..models import (
    ModelSource,
    load_error,
    load_gguf,
    resolve_model,
    share_like_other_files,
)
from ..protocol import reasoning_loop_start
from ..registry import register_backend
from .answer_grammars import AnswerGrammars
from .base import AnswerConstraint, Completion, GenerationSettings
from .local import LocalBackend, LocalOptions
from .prefix_cache import (
    KeptRows,
    PrefixCache,
    RowLayers,
    batch_of_rows,
    reusable,
    row_layers,
    shared_prefix_length,
)
from .repeat_guard import comma_token_ids, guard_row

logger = logging.getLogger(__name__)

MAX_GRAMMARS = 256  # compiled answer grammars kept (schemas may differ per prompt)


_FORK_HANDLER: list[bool] = []  # registered once per process


def _one_thread_in_forked_children(torch: Any) -> None:
    """``nlp.pipe(texts, n_process=N)`` forks the process on Linux. GNU OpenMP is not
    fork-safe: a child whose parent has run a parallel region (any generation with more than
    one thread) waits forever in its own first one. Forked children compute on one thread:
    the N processes are the parallelism asked for."""
    if not _FORK_HANDLER and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))
        _FORK_HANDLER.append(True)


@dataclass(frozen=True, kw_only=True)
class TransformersOptions(LocalOptions):
    """A local transformers model (``reasoning_ner.Transformers.v1``).

    model: reference resolved by ``spacy_reasoningner.models.resolve_model``.
    device: "auto" (CUDA when available, else CPU), or any torch device string.
    dtype: "auto" (bfloat16 on GPUs that support it; on a CPU, bfloat16 where it has native
        bfloat16 and multiplies the model's matrices faster in it, measured at load: see
        ``hardware.faster_cpu_dtype``; else float32), "float32", "bfloat16" or "float16".
    attn_implementation: "auto" (flash_attention_2 when importable on a GPU, else sdpa).
    batch_size: most prompts per ``generate`` call; larger batches are split (memory bound).
    structured_output: constrain the JSON answer to the protocol's shape and the schema's
        labels with xgrammar, reasoning left free (see ``local``); "auto": for models
        below 4B parameters, so small models always answer in a parseable form.
    answer_max_tokens: token budget of the constrained answer.
    trust_remote_code: run code shipped with the model; off unless you trust its source.
    num_threads: CPU threads of torch (``torch.set_num_threads``, for the whole process),
        set when the model loads; unset: torch's default, one per core. On a shared machine
        set it to the cores you may use: oversubscribed threads slow generation many times.
        Processes forked by ``nlp.pipe(n_process=N)`` compute on one thread each.
    prefix_caching: reuse key/value caches of tokens read before (``prefix_cache``): the
        answer pass continues each prompt's reasoning pass, alone or in a batch; a batch
        reads the head its prompts share (instruction, notes, schema) once, and keeps it for
        the next batch and call while the schema stays the same. ``ner_usage`` counts the
        reused prompt tokens apart.
    """

    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "auto"
    batch_size: int = 16
    num_threads: int | None = None
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype {self.dtype!r} is not one of auto, float32, bfloat16, float16")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 (or unset), got {self.num_threads}")


@register_backend("reasoning_ner.Transformers.v1", TransformersOptions)
class TransformersBackend(LocalBackend):
    """A local transformers model, loaded on first use (see ``TransformersOptions``)."""

    engine_name = "transformers"
    options: TransformersOptions

    def __init__(self, options: TransformersOptions | None = None):
        super().__init__(options or TransformersOptions())
        self._grammars: OrderedDict[str, Any] = OrderedDict()  # answer schema -> grammar
        self._grammar_compiler: Any = None
        self._comma_tokens: Any = None  # ids of the tokens holding a comma (a tensor)
        self._prefix_cache = PrefixCache()
        self._kept_rows = KeptRows()
        self.model: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # Compiled grammars cannot be pickled; they are compiled again when needed.
        state = dict(self.__dict__)
        state.update(
            _grammars=OrderedDict(),
            _grammar_compiler=None,
            _prefix_cache=PrefixCache(),
            _kept_rows=KeptRows(),
        )
        return state

    # ----------------------------------------------------------------- loading

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def tokenizer(self) -> Any:
        self._ensure_loaded()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def load(self, source: str | None = None) -> None:
        """Load weights and tokenizer from ``source`` (a folder) or the configured reference."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.options.num_threads:
            torch.set_num_threads(self.options.num_threads)
        _one_thread_in_forked_children(torch)
        device = self._device(torch)
        reference = source or self.reference
        resolved = resolve_model(reference)
        kwargs: dict[str, Any] = {
            "dtype": self._dtype(torch, device, resolved),
            "attn_implementation": self._attention(device),
            "trust_remote_code": self.options.trust_remote_code,
        }
        try:
            if resolved.gguf_file:
                model, tokenizer = load_gguf(Path(resolved.path) / resolved.gguf_file, **kwargs)
            else:
                tokenizer = AutoTokenizer.from_pretrained(
                    resolved.path, trust_remote_code=self.options.trust_remote_code
                )
                model = AutoModelForCausalLM.from_pretrained(
                    resolved.path, use_safetensors=True, **kwargs
                )
        except OSError as error:
            raise load_error(reference, resolved, error) from error
        self._count_weight_load(resolved)
        self.source = resolved
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self._tokenizer = model.to(device).eval(), tokenizer
        self._grammars.clear()
        self._grammar_compiler = None
        self._comma_tokens = None
        self._prefix_cache.clear()
        self._kept_rows.clear()
        logger.info("Loaded %s on %s (%s)", source or self.reference, device, kwargs["dtype"])

    def _identity_details(self) -> dict[str, Any]:
        # The chat template and dtype are known once loaded; the identity loads the model.
        self._ensure_loaded()
        return {
            "chat_template": self.chat_template_hash(),
            "dtype": str(self.model.dtype),
            "constrained": self.constrained,
        }

    def _device(self, torch: Any) -> Any:
        if self.options.device != "auto":
            return torch.device(self.options.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _dtype(self, torch: Any, device: Any, source: ModelSource) -> Any:
        if self.options.dtype != "auto":
            return getattr(torch, self.options.dtype)
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu":
            return getattr(torch, faster_cpu_dtype(*_matrix_shape(source)))
        return torch.float32

    def _attention(self, device: Any) -> str:
        if self.options.attn_implementation != "auto":
            return self.options.attn_implementation
        if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        return "sdpa"

    def to_disk(self, path: Path) -> None:
        """Save weights (safetensors) and tokenizer, chat template included, into ``path``."""
        self._ensure_loaded()
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        share_like_other_files(Path(path))

    def from_disk(self, path: Path) -> None:
        self.load(str(path))

    # ----------------------------------------------------------------- generation

    def _generate_free(self, texts: list[str], settings: GenerationSettings) -> list[Completion]:
        return self._in_batches(
            texts, lambda batch, rows: self._generate_batch(batch, _seeded(settings, rows))
        )

    def _generate_reasoning(
        self, texts: list[str], settings: GenerationSettings
    ) -> list[Completion]:
        loops = settings.stop_reasoning_loops
        return self._in_batches(
            texts,
            lambda batch, rows: self._generate_batch(
                batch, _seeded(settings, rows), stop_at_loops=loops, keep_rows=True
            ),
        )

    def _generate_answers(
        self,
        texts: list[str],
        settings: GenerationSettings,
        constraints: Sequence[AnswerConstraint],
    ) -> list[Completion]:
        def constrained(batch: list[str], rows: list[int]) -> list[Completion]:
            # One set of matchers per generate call (they keep per-row state).
            grammars = AnswerGrammars([self._grammar(constraints[i]) for i in rows], self.tokenizer)
            completions = self._generate_batch(
                [text + prefix for text, prefix in zip(batch, grammars.prefixes, strict=True)],
                _seeded(settings, rows),
                logits_processor=grammars.logits_processor,
                stopping_criterion=grammars.stopping_criterion,
                close_repeats=True,
                answer_heads=grammars.prefixes,
            )
            return [
                replace(
                    completion,
                    text=grammars.complete(row, completion.text),
                    prompt=text,
                    # Ended by the grammar, even on the budget's last token: not cut.
                    finish_reason="stop" if grammars.done[row] else completion.finish_reason,
                )
                for row, (text, completion) in enumerate(zip(batch, completions, strict=True))
            ]

        return self._in_batches(texts, constrained)

    def _in_batches(self, texts: list[str], run: Any) -> list[Completion]:
        """``run(batch, rows)`` over sub-batches of at most ``batch_size`` prompts of similar
        length (less padding), results back in the order of ``texts``. One pass: the rows it
        keeps serve the next pass (``KeptRows``)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        completions: list[Completion | None] = [None] * len(texts)
        try:
            for first in range(0, len(order), self.options.batch_size):
                rows = order[first : first + self.options.batch_size]
                for i, completion in zip(rows, run([texts[i] for i in rows], rows), strict=True):
                    completions[i] = completion
        finally:
            self._kept_rows.rotate()
        return completions  # type: ignore[return-value]

    def _comma_token_ids(self) -> Any:
        """``repeat_guard.comma_token_ids`` as a tensor on the model's device, where the
        scores it indexes are (read once per loaded model)."""
        if self._comma_tokens is None:
            import torch

            ids = comma_token_ids(self.tokenizer)
            self._comma_tokens = torch.tensor(ids, dtype=torch.long, device=self.model.device)
        return self._comma_tokens

    def _grammar(self, constraint: AnswerConstraint) -> Any:
        """The answer constraint (JSON Schema or EBNF grammar) compiled for this tokenizer
        (kept: schemas repeat across calls; grounded grammars when a text comes back)."""
        grammar = isinstance(constraint, str)
        key = constraint if grammar else json.dumps(constraint, sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        if self._grammar_compiler is None:
            try:
                import xgrammar
            except ImportError as error:
                raise ImportError(
                    "structured_output needs xgrammar: pip install xgrammar, or set "
                    "structured_output = false"
                ) from error
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size
            )
            # Our LRU is the cache: xgrammar's own is unbounded, and grounded grammars differ
            # per text.
            self._grammar_compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        compiler = self._grammar_compiler
        # JSON Schemas compile to compact JSON with the separators of the training answers (as
        # the grounded grammars are): with free whitespace a weak model can spend its whole
        # budget on blanks inside the object.
        compiled = (
            compiler.compile_grammar(key)
            if grammar
            else compiler.compile_json_schema(key, any_whitespace=False, separators=(", ", ": "))
        )
        self._grammars[key] = compiled
        if len(self._grammars) > MAX_GRAMMARS:
            self._grammars.popitem(last=False)
        return compiled

    def _generate_batch(
        self,
        texts: list[str],
        settings: GenerationSettings,
        logits_processor: Any = None,
        stop_at_loops: bool = False,
        close_repeats: bool = False,
        stopping_criterion: Any = None,
        answer_heads: Sequence[str] | None = None,
        keep_rows: bool = False,
    ) -> list[Completion]:
        """``close_repeats``: after ``logits_processor`` (an answer constraint), refuse a comma
        after a mention its list already holds (``repeat_guard``); ``answer_heads``: the
        answer text each prompt already ends with, which the guard reads before the tokens.
        ``stopping_criterion``: one more, after the stop strings'. ``keep_rows``: keep each
        row's key/value cache for the next pass (the reasoning pass, which the answer pass
        continues)."""
        import torch

        inputs, past, reused = self._prompt_inputs(texts)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": not settings.greedy,
        }
        if settings.greedy:
            # Unset the model's sampling defaults so transformers does not warn about them.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
        prompt_length = inputs["input_ids"].shape[1]
        stopping = []
        if settings.stop or stop_at_loops:
            stopping.append(_text_stop(self.tokenizer, prompt_length, settings.stop, stop_at_loops))
        if stopping_criterion is not None:
            stopping.append(stopping_criterion)
        if stopping:
            kwargs["stopping_criteria"] = stopping
        processors = [logits_processor] if logits_processor is not None else []
        if close_repeats:
            heads = answer_heads or [""] * len(texts)
            processors.append(
                _mention_repeat_guard(self.tokenizer, prompt_length, self._comma_token_ids(), heads)
            )
        if processors:
            kwargs["logits_processor"] = processors
        if past is not None:
            kwargs["past_key_values"] = past
        alone = len(texts) == 1
        keep = self.options.prefix_caching and (alone or keep_rows)
        if keep:
            kwargs["return_dict_in_generate"] = True
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        sequences = output.sequences if keep else output
        generated = sequences[:, prompt_length:].tolist()
        end_ids = _end_token_ids(self.model, self.tokenizer)
        # Tokens up to and with the first end token, or all when none came.
        ends = [
            next((i + 1 for i, tok in enumerate(row) if tok in end_ids), None) for row in generated
        ]
        if keep and keep_rows:  # a row alone too: the next pass may batch it with others
            self._keep_rows(inputs, sequences, output.past_key_values, ends)
        if keep and alone:
            self._prefix_cache.keep(sequences[0].tolist(), output.past_key_values)
        completions = []
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()  # without the padding
        for prompt, row, n_tokens, read, cached in zip(
            texts, generated, ends, prompt_lengths, reused, strict=True
        ):
            tokens = row[:n_tokens] if n_tokens else row
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            stopped_at = min((text.find(s) for s in settings.stop if s in text), default=-1)
            if stopped_at >= 0:
                text = text[:stopped_at]
            length_cut = n_tokens is None and stopped_at < 0 and len(row) >= settings.max_new_tokens
            completions.append(
                Completion(
                    text=text,
                    finish_reason="length" if length_cut else "stop",
                    prompt=prompt,
                    n_tokens=len(tokens),
                    prompt_tokens=int(read),
                    cached_prompt_tokens=cached if self.options.prefix_caching else None,
                )
            )
        return completions

    def _keep_rows(self, inputs: Any, sequences: Any, cache: Any, ends: list[int | None]) -> None:
        """Keep each row's key/value cache, cut to its own tokens: the prompt without its
        padding, then what it generated up to its end (``ends``; the cache holds every token
        but the last one generated, never read back)."""
        import torch

        if not reusable(cache):
            return
        width = inputs["input_ids"].shape[1]
        generated_in_cache = cache.get_seq_length() - width
        mask = inputs["attention_mask"]
        for row, end in enumerate(ends):
            generated = min(end or generated_in_cache, generated_in_cache)
            positions = torch.cat(
                [
                    mask[row].nonzero().flatten(),
                    torch.arange(width, width + generated, device=mask.device),
                ]
            )
            tokens = sequences[row, positions].tolist()
            self._kept_rows.add(tokens, row_layers(cache, row, positions))

    def _prompt_inputs(self, texts: list[str]) -> tuple[Any, Any | None, list[int]]:
        """The prompts' token ids and attention mask for ``generate``, the key/value cache of
        the tokens they start with (``prefix_caching``) or None, and how many tokens of each
        prompt that cache covers.

        A prompt alone takes what it shares with the last call's cache, or with a row the last
        pass kept when that is longer. In a batch, each row takes the longest prefix it shares
        with a row the last pass kept (the answer pass continues the reasoning pass's rows); rows left shorter than the head all prompts
        start with (instruction, notes, schema) take that head, read once or taken from the
        kept cache, and kept for the next call. Each row then reads only its own tail. Rows
        are padded before their cached part and between it and their tail: the attention
        mask hides the padding, and transformers derives the positions from the mask.
        """
        device = self.model.device
        if not self.options.prefix_caching:
            # Chat templates already contain the special tokens (BOS etc.).
            padded = self.tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            return padded, None, [0] * len(texts)
        rows = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        picks = [self._kept_rows.longest_prefix(row) for row in rows]
        minimum = self._prefix_cache.min_shared_tokens
        pad = self.tokenizer.pad_token_id
        if len(rows) == 1:
            # The last call's cache, or the row the last pass kept for this prompt (a pass of
            # several prompts generated one by one keeps them all; the last call holds one).
            cache = self._prefix_cache.take(rows[0])
            reused = cache.get_seq_length() if cache is not None else 0
            n = picks[0][0]
            if n > reused and n >= minimum:
                return _padded_after_cache(rows, [n], pad, device), batch_of_rows(picks), [n]
            return _padded_after_cache(rows, [reused], pad, device), cache, [reused]
        # At least one token of every row is left to read: its logits give the first new token.
        head = min(shared_prefix_length(rows), min(map(len, rows)) - 1)
        if head >= minimum and any(n < head for n, _ in picks):
            head_layers = self._shared_head(rows[0], head)
            if head_layers is not None:
                picks = [(n, row) if n >= head else (head, head_layers) for n, row in picks]
        picks = [(n, row) if n >= minimum else (0, None) for n, row in picks]
        reused = [n for n, _ in picks]
        if not any(reused):
            return _padded_after_cache(rows, reused, pad, device), None, reused
        return _padded_after_cache(rows, reused, pad, device), batch_of_rows(picks), reused

    def _shared_head(self, row: list[int], length: int) -> RowLayers | None:
        """The key/value cache of the first ``length`` tokens of ``row`` (the head every prompt
        of a batch starts with), taken from the kept cache as far as it covers them and read
        for the rest; kept for the next call. None for a model whose cache cannot be cut back
        (``reusable``)."""
        import torch

        head = row[:length]
        with torch.inference_mode():
            # ``take`` leaves the last token it is given to read: one more than the head.
            cache = self._prefix_cache.take(row[: length + 1])
            read = cache.get_seq_length() if cache is not None else 0
            if read < len(head):
                tail = torch.tensor([head[read:]], device=self.model.device)
                cache = self.model(
                    input_ids=tail, past_key_values=cache, use_cache=True, logits_to_keep=1
                ).past_key_values
        if not reusable(cache):
            return None
        self._prefix_cache.keep(head, cache)
        return row_layers(cache, 0, slice(0, len(head)))


def _padded_after_cache(rows: list[list[int]], cached: list[int], pad: int, device: Any) -> Any:
    """Each row's first ``cached`` tokens (those a key/value cache covers), padded before to
    one width, then its other tokens, padded before to one width, with the attention mask
    that hides the padding (a ``BatchEncoding`` of tensors)."""
    import torch
    from transformers import BatchEncoding

    cached_width = max(cached)
    tail_width = max(len(row) - n for row, n in zip(rows, cached, strict=True))
    ids, mask = [], []
    for row, n in zip(rows, cached, strict=True):
        before, after = cached_width - n, tail_width - (len(row) - n)
        ids.append([*[pad] * before, *row[:n], *[pad] * after, *row[n:]])
        mask.append([0] * before + [1] * n + [0] * after + [1] * (len(row) - n))
    return BatchEncoding(
        {
            "input_ids": torch.tensor(ids, device=device),
            "attention_mask": torch.tensor(mask, device=device),
        }
    )


# The MLP shape measured for a model whose folder has no config.json (a GGUF file): a 0.5B's.
DEFAULT_MATRIX_SHAPE = (896, 4864)


def _matrix_shape(source: ModelSource) -> tuple[int, int]:
    """The hidden and MLP sizes of the model at ``source`` (its config.json), for
    ``faster_cpu_dtype``."""
    config_file = Path(source.path) / "config.json"
    if source.gguf_file or not config_file.is_file():
        return DEFAULT_MATRIX_SHAPE
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    try:
        return int(config["hidden_size"]), int(config["intermediate_size"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_MATRIX_SHAPE


def _seeded(settings: GenerationSettings, rows: list[int]) -> GenerationSettings:
    """A sub-batch draws from one generator, seeded as its first prompt
    (``GenerationSettings.at_position``)."""
    return settings.at_position(min(rows)) if rows else settings


def _text_stop(tokenizer: Any, prompt_length: int, stop: Sequence[str], loops: bool) -> Any:
    """A stopping criterion that ends a row when its text holds one of the ``stop`` strings
    or, with ``loops``, at the end of a reasoning line repeating an earlier one
    (``protocol.reasoning_loop_start``).

    Not transformers' ``stop_strings``: that re-reads the whole vocabulary at every
    ``generate`` call (0.6 s with SmolLM2's 49k tokens, a sixth of a sentence's time here).
    Rows are left-padded, so every row's generated tokens start at ``prompt_length``; a step
    decodes a row's last few generated tokens (a token holds at least one character), and its
    whole text only when a line has just ended.
    """
    import torch
    from transformers import StoppingCriteria

    tail = max((len(s) for s in stop), default=0)

    class TextStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            recent = input_ids[:, max(prompt_length, input_ids.shape[1] - tail) :].tolist()
            for row, tokens in enumerate(recent):
                text = tokenizer.decode(tokens, skip_special_tokens=True) if stop else ""
                if any(s in text for s in stop):
                    done[row] = True
                elif loops and "\n" in tokenizer.decode(input_ids[row, -1:]):
                    generated = input_ids[row, prompt_length:]
                    text = tokenizer.decode(generated, skip_special_tokens=True)
                    done[row] = reasoning_loop_start(text) is not None
            return done

    return TextStop()


def _mention_repeat_guard(
    tokenizer: Any, prompt_length: int, comma_ids: Any, heads: Sequence[str]
) -> Any:
    """``repeat_guard`` as a transformers logits processor, after the answer constraint's;
    ``heads``: the answer text each row's prompt ends with."""
    from transformers import LogitsProcessor

    guards = [guard_row(tokenizer, comma_ids, head) for head in heads]

    class MentionRepeatGuard(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row, guard in enumerate(guards):
                guard(input_ids[row, prompt_length:], scores[row])
            return scores

    return MentionRepeatGuard()


def _end_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the generation config's eos ids and the pad id."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos])
    ids |= {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {i for i in ids if i is not None}
