"""``python -m training <stage> <profile> [--section.key value ...]``: the stage commands
that project.yml runs. Extra ``--a.b value`` options override values of the profile."""

import typer

from . import build_data

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
def main() -> None:
    """Stages read a profile from configs/ (cpu, gpu-1.7b, gpu-8b) or a .cfg path."""


app.command("build-data", context_settings=OVERRIDES)(build_data.command)
# Further stages register here.

if __name__ == "__main__":
    app()
