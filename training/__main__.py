"""``python -m training <stage> <profile> [--section.key value ...]``: the stage commands
that project.yml runs. Extra ``--a.b value`` options override values of the profile."""

import os
from typing import Annotated

import typer

from . import assemble, build_data, evaluate, export_adapter, grpo, prepare_data, sft
from .config import ConfigError

app = typer.Typer(
    name="training",
    help="Stages of the ReasoningNER recipe: data (CG), SFT (CT), GRPO (RE), evaluation.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def main(
    gpu_id: Annotated[
        int, typer.Option(help="Run on this GPU (-1: keep CUDA_VISIBLE_DEVICES).")
    ] = -1,
) -> None:
    """Stages read a profile from configs/ (cpu, gpu-1.7b, gpu-8b) or a .cfg path."""
    if gpu_id >= 0:  # before any CUDA initialisation
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_id)


app.command("prepare-data")(prepare_data.command)
app.command("build-data", context_settings=OVERRIDES)(build_data.command)
app.command("sft", context_settings=OVERRIDES)(sft.command)
app.command("grpo", context_settings=OVERRIDES)(grpo.command)
app.command("assemble", context_settings=OVERRIDES)(assemble.command)
app.command("evaluate", context_settings=OVERRIDES)(evaluate.command)
app.command("export-adapter", context_settings=OVERRIDES)(export_adapter.command)


def main_entry() -> None:
    """Run the app; a profile that does not fit its stage ends with the reason, no traceback."""
    try:
        app()
    except ConfigError as error:
        typer.echo(f"Error: {error}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main_entry()
