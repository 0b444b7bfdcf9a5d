"""Discover SQL models and their dependency graph.

A model is one ``.sql`` file under the project folder (default ``dbt_like_sql/`` at
the repository root, or ``STRIPE_PIPELINE_MODELS_DIR``). Its name is the file stem,
its group the top folder (``staging``, ``marts``). ``{{ ref('m') }}`` depends on model
``m``, ``{{ source('t') }}`` on domain table ``t``. A ``<name>.yml`` beside the file
documents the model (``description``, ``columns``). Materialization defaults to
``view`` under ``staging/`` and ``table`` elsewhere; a header overrides it:
``-- config: materialized=table`` or ``{{ config(materialized='view') }}``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import yaml

MODELS_DIR_ENV = "STRIPE_PIPELINE_MODELS_DIR"
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "dbt_like_sql"
MATERIALIZATIONS = ("table", "view")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_REF = re.compile(r"""\bref\(\s*['"]([^'"]+)['"]\s*\)""")
_SOURCE = re.compile(r"""\bsource\(\s*['"]([^'"]+)['"]\s*\)""")
_HEADER_CONFIG = re.compile(r"^\s*--\s*config:\s*(.+)$", re.MULTILINE)
_JINJA_CONFIG = re.compile(r"\{\{\s*config\((.*?)\)\s*\}\}", re.DOTALL)
_KV = re.compile(r"""(\w+)\s*=\s*['"]?([\w.-]+)['"]?""")


class ModelError(Exception):
    """A model that cannot be discovered, rendered or built; the message names its file."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    group: str
    sql: str
    materialized: str
    refs: tuple[str, ...]
    sources: tuple[str, ...]
    description: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def code_version(self) -> str:
        """Hash of the SQL and its materialization: changes exactly when a rebuild would."""
        digest = hashlib.sha256(f"{self.materialized}\n{self.sql}".encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Project:
    root: Path
    models: Mapping[str, Model]

    def order(self, names: Iterable[str] | None = None) -> list[Model]:
        """Models in dependency order (all, or the given ones)."""
        wanted = set(self.models) if names is None else set(names)
        graph = {name: set(self.models[name].refs) for name in self.models}
        return [self.models[n] for n in TopologicalSorter(graph).static_order() if n in wanted]

    def downstream(self, name: str) -> list[str]:
        """Names of models that ref ``name``, directly or not."""
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for model in self.models.values():
                if current in model.refs and model.name not in found:
                    found.add(model.name)
                    frontier.append(model.name)
        return sorted(found)

    @property
    def sources(self) -> list[str]:
        return sorted({s for m in self.models.values() for s in m.sources})


def project_root() -> Path:
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_ROOT)


def load_project(root: Path | str | None = None) -> Project:
    """Read every model under ``root`` and check names, refs and cycles."""
    root = Path(root) if root is not None else project_root()
    if not root.is_dir():
        raise ModelError(root, "model folder not found")
    models: dict[str, Model] = {}
    for path in sorted(root.rglob("*.sql")):
        model = parse_model(path, root)
        if model.name in models:
            raise ModelError(
                path, f"duplicate model name {model.name!r} ({models[model.name].path})"
            )
        models[model.name] = model
    for model in models.values():
        for ref in model.refs:
            if ref not in models:
                raise ModelError(model.path, f"ref('{ref}') names no model")
    project = Project(root, models)
    try:
        project.order()
    except CycleError as exc:
        cycle = exc.args[1]
        raise ModelError(models[cycle[0]].path, f"dependency cycle: {' -> '.join(cycle)}") from exc
    return project


def parse_model(path: Path, root: Path) -> Model:
    sql = path.read_text()
    name = path.stem
    if not _NAME.match(name):
        raise ModelError(path, "model file names must be lower_snake_case")
    relative = path.relative_to(root)
    group = relative.parts[0] if len(relative.parts) > 1 else "models"
    config = _read_config(sql)
    materialized = config.get("materialized", "view" if group == "staging" else "table")
    if materialized not in MATERIALIZATIONS:
        raise ModelError(path, f"materialized must be one of {MATERIALIZATIONS}")
    description, columns = _read_docs(path)
    return Model(
        name=name,
        path=path,
        group=group,
        sql=sql,
        materialized=materialized,
        refs=tuple(dict.fromkeys(_REF.findall(sql))),
        sources=tuple(dict.fromkeys(_SOURCE.findall(sql))),
        description=description,
        columns=columns,
    )


def _read_config(sql: str) -> dict[str, str]:
    config: dict[str, str] = {}
    for match in [*_HEADER_CONFIG.finditer(sql), *_JINJA_CONFIG.finditer(sql)]:
        config.update(dict(_KV.findall(match.group(1))))
    return config


def _read_docs(sql_path: Path) -> tuple[str, dict[str, str]]:
    doc_path = sql_path.with_suffix(".yml")
    if not doc_path.exists():
        return "", {}
    try:
        doc = yaml.safe_load(doc_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ModelError(doc_path, f"invalid YAML: {exc}") from exc
    columns = doc.get("columns") or {}
    if not isinstance(columns, dict):
        raise ModelError(doc_path, "columns must map column name to description")
    return str(doc.get("description") or "").strip(), {
        str(k): str(v).strip() for k, v in columns.items()
    }
