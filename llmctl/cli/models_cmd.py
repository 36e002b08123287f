"""`pull`, `import` and the `models` group (list, show, rm, catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from ..errors import LlmctlError
from ..output import Output
from .common import JsonOpt, handle_errors
from .completers import complete_models

app = typer.Typer(rich_markup_mode=None, help="The local model store: list, show, rm, catalog.", no_args_is_help=True)


def _human(n: float) -> str:
    from ..models.progress import human

    return human(n)


def pull(model: Annotated[str, typer.Argument(
             help="alias[:QUANT] from the catalog, hf:ORG/REPO:QUANT, hf:ORG/REPO/FILE.gguf, or hf:ORG/REPO "
                  "(the whole repo).", show_default=False)],
         revision: Annotated[Optional[str], typer.Option(
             "--revision", help="Branch, tag or commit to pull (default: main), pinned to its commit.")] = None,
         force: Annotated[bool, typer.Option("--force", help="Download every file again.")] = False,
         json: JsonOpt = False) -> None:
    """Download a model from the Hugging Face Hub (HF_ENDPOINT: a mirror; HF_TOKEN: gated repos).

    Resumes what an interrupted pull left, verifies each file (sha256 from the Hub's LFS
    metadata, else the git blob id) and does nothing if the store already has it.
    """
    from ..models.progress import progress_for
    from ..models.pull import pull as do_pull

    out = Output(json)
    res = do_pull(model, revision=revision, force=force, progress=progress_for(out))
    m = res.manifest
    if json:
        out.data(res.as_dict())
        return
    where = f"{m.repo}@{(m.revision or '')[:12]}"
    nfiles = f"{len(m.files)} file{'s' * (len(m.files) != 1)}"
    if res.noop:
        out.text(f"{m.name}: {res.note} ({where}, {nfiles}, {_human(m.size)})")
    else:
        rate = res.transferred / res.seconds if res.seconds > 0 else 0
        resumed = f", resumed from {_human(res.resumed)}" if res.resumed else ""
        out.text(f"{m.name}: pulled {where}, {nfiles}, {_human(m.size)}; downloaded {_human(res.transferred)} "
                 f"in {res.seconds:.1f}s ({_human(rate)}/s){resumed}; verified by {m.verified}")
        if res.note:
            out.info(res.note)
    out.hint(f"use it in a profile as `model: {m.reference}` (or `model: {m.name}`)")


def import_(path: Annotated[Path, typer.Argument(help="A local .gguf file.")],
            as_: Annotated[str, typer.Option("--as", help="Name profiles will use for it.")],
            link: Annotated[bool, typer.Option("--link", help="Symlink instead of copying.")] = False,
            force: Annotated[bool, typer.Option("--force", help="Replace a model of that name.")] = False,
            json: JsonOpt = False) -> None:
    """Bring a local GGUF file into the model store under NAME."""
    from ..models.store import import_model

    m = import_model(path, as_, link=link, force=force)
    out = Output(json)
    if json:
        out.data(m.__dict__)
    else:
        out.text(f"{m.name}: {'linked' if m.linked else 'copied'} {m.reference} ({m.size / 1e6:.1f} MB)")


@app.command("list")
@handle_errors
def list_(json: JsonOpt = False) -> None:
    """Every model in the store: name, reference, quant, size, path, revision, verified."""
    from ..models.store import list_models

    out = Output(json)
    rows: list[dict[str, Any]] = []
    skipped: list[LlmctlError] = []
    for directory, m in list_models(skipped=skipped):
        rows.append({"name": m.name, "reference": m.reference, "quant": m.quant, "size": m.size,
                     "path": str(m.main_path(directory)), "revision": m.revision, "verified": m.verified,
                     "source": m.source, "repo": m.repo})
    for err in skipped:
        out.warn(f"{err.message} (left out; `llmctl models rm {Path(str(err.facts['path'])).name}` removes the link)")
    if json:
        out.data(rows)
        return
    if not rows:
        out.info("no models yet: `llmctl pull ALIAS` (see `llmctl models catalog`) or `llmctl import FILE --as NAME`")
        return
    out.table(["name", "reference", "quant", "size", "revision", "verified", "path"],
              [[r["name"], r["reference"], r["quant"] or "-", _human(r["size"]), (r["revision"] or "-")[:12],
                r["verified"] or "-", r["path"]] for r in rows])


@app.command("show")
@handle_errors
def show(name: Annotated[str, typer.Argument(help="A model's name in the store.", show_default=False,
                                             autocompletion=complete_models)],
         json: JsonOpt = False) -> None:
    """A model's manifest, plus facts from its GGUF header (architecture, parameters, context, quant)."""
    from dataclasses import asdict

    from ..errors import ModelNotFound
    from ..models.store import Manifest, model_dir
    from ..paths import Paths

    out = Output(json)
    directory = model_dir(name, Paths.from_env())
    m = Manifest.read(directory)
    if m is None:
        raise ModelNotFound(f"no model named {name!r} in the store")
    main = m.main_path(directory)
    info = asdict(m)
    info["path"] = str(main)
    gguf = None
    if main.is_file() and main.suffix == ".gguf":
        from ..models.gguf_info import gguf_facts

        try:
            gguf = gguf_facts(main)
        except Exception as exc:  # noqa: BLE001 - a broken header is reported, not fatal
            gguf = {"error": f"cannot read the GGUF header: {exc}"}
    info["gguf"] = gguf
    if json:
        out.data(info)
        return
    from ..models.gguf_info import human_count

    lines = [("name", m.name), ("reference", m.reference), ("source", m.source), ("repo", m.repo),
             ("revision", m.revision), ("quant", m.quant), ("size", _human(m.size)), ("path", str(main)),
             ("verified", m.verified), ("endpoint", m.endpoint)]
    if gguf and "error" not in gguf:
        lines += [("architecture", gguf["architecture"]),
                  ("parameters", human_count(gguf["parameters"]) if gguf.get("parameters") else None),
                  ("context length", gguf["context_length"]), ("quant type", gguf["quant_type"]),
                  ("gguf name", gguf["name"])]
    elif gguf:
        lines.append(("gguf", gguf["error"]))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        if v not in (None, ""):
            out.text(f"{k.ljust(width)}  {v}")
    for f in m.files if len(m.files) > 1 else []:
        out.text(f"  {f['path']}  {_human(f['size'])}  {f.get('verified') or ''}")


@app.command("rm")
@handle_errors
def rm(names: Annotated[List[str], typer.Argument(help="Model names in the store.", show_default=False,
                                                  autocompletion=complete_models)],
       json: JsonOpt = False) -> None:
    """Delete models from the store (a linked import loses only its link)."""
    from ..models.store import check_store_name, remove_model

    out = Output(json)
    for n in names:  # every name is checked before anything is removed
        check_store_name(n)
    removed = []
    for n in names:
        path, link = remove_model(n)
        removed.append(str(path))
        if not json:
            out.text(f"{n}: removed" + (f" the link (its target {link} was kept)" if link else ""))
    if json:
        out.data({"removed": removed})


@app.command("catalog")
@handle_errors
def catalog(json: JsonOpt = False) -> None:
    """The aliases `llmctl pull` knows (built-in, plus $LLMCTL_HOME/config/catalog.yaml)."""
    from ..models.catalog import load_catalog

    out = Output(json)
    entries = sorted(load_catalog().values(), key=lambda e: e.alias)
    if json:
        out.data([e.__dict__ for e in entries])
        return
    out.table(["alias", "repo", "quant", "engine", "description"],
              [[e.alias, e.repo, e.quant or "(whole repo)", e.engine, e.description] for e in entries])


COMMANDS = {"pull": handle_errors(pull), "import": handle_errors(import_), "models": app}
