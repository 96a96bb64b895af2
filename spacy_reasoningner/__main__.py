"""``python -m spacy_reasoningner``: the same commands as the ``spacy-reasoningner`` script."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="spacy-reasoningner")
