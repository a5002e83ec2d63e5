"""The ``ragrec`` command line. Entry points stay thin: parse, build objects, call library code."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from ragrec.cli.data import app as data_app
from ragrec.cli.finetune import finetune_cmd, scenario_app
from ragrec.cli.llm import chat_cmd, demo_cmd, explain_cmd, recommend_cmd, recommender_app
from ragrec.cli.retrieval import eval_app, index_app, retriever_app
from ragrec.cli.serve import batch_recommend_cmd, gguf_cmd, retrain_cmd, serve_cmd
from ragrec.config import validation_message
from ragrec.errors import RagrecError

__all__ = ["app", "main"]

app = typer.Typer(
    name="ragrec",
    help="Recommendation with a language model grounded by retrieval.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
app.add_typer(retriever_app, name="retriever")
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
app.add_typer(recommender_app, name="recommender")
app.add_typer(scenario_app, name="scenario")
app.command("recommend")(recommend_cmd)
app.command("explain")(explain_cmd)
app.command("chat")(chat_cmd)
app.command("demo")(demo_cmd)
app.command("finetune")(finetune_cmd)
app.command("serve")(serve_cmd)
app.command("retrain")(retrain_cmd)
app.command("batch-recommend")(batch_recommend_cmd)
app.command("gguf")(gguf_cmd)


@app.callback()
def _root() -> None:
    """Recommendation with a language model grounded by retrieval."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a :class:`RagrecError` becomes one line on stderr and exit status 2."""
    try:
        app(args=argv, standalone_mode=False)
    except RagrecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as e:  # a setting given on the command line that a config model rejects
        print(f"error: {validation_message(e)}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
