"""Render a model's template to plain SQL for one dialect (jinja2, strict undefined).

``ref`` and ``source`` resolve to relation names; ``config`` renders to nothing (it is
read at discovery); the dialect macros of ``macros.py`` are template functions. Any
template error becomes a ``ModelError`` naming the file.
"""

from __future__ import annotations

import jinja2

from stripe_pipeline.db.models import metadata
from stripe_pipeline.model.macros import Macros
from stripe_pipeline.model.project import Model, ModelError, Project

# tables a model may read with source(); later migrations add theirs to the metadata
KNOWN_SOURCES = frozenset(metadata.tables)

_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
)


def render_model(model: Model, project: Project, dialect: str) -> str:
    """The model's SELECT, ready to run on ``dialect`` (``sqlite`` or ``postgresql``)."""

    def ref(name: str) -> str:
        if name not in project.models:
            raise ModelError(model.path, f"ref('{name}') names no model")
        return name

    def source(table: str) -> str:
        if table not in KNOWN_SOURCES:
            raise ModelError(model.path, f"source('{table}') names no domain table")
        return table

    def config(**_: object) -> str:
        return ""

    context = {"ref": ref, "source": source, "config": config, **Macros(dialect).functions()}
    try:
        sql = _ENV.from_string(model.sql).render(context)
    except ModelError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise ModelError(model.path, f"template syntax error line {exc.lineno}: {exc}") from exc
    except Exception as exc:
        raise ModelError(model.path, f"cannot render: {type(exc).__name__}: {exc}") from exc
    return _single_select(model, sql)


def _single_select(model: Model, sql: str) -> str:
    body = sql.strip().rstrip(";").strip()
    code = "\n".join(line.split("--", 1)[0] for line in body.splitlines()).strip()
    if ";" in code:
        raise ModelError(model.path, "a model is one SELECT statement (found ';')")
    if not code.lower().startswith(("select", "with", "(")):
        raise ModelError(model.path, "a model must be a SELECT (or WITH ... SELECT)")
    return body
