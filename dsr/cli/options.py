"""Flags generated from a stage's options dataclass, and its errors in terms of those flags.

Each field becomes ``--field-name`` (``metadata["flag"]`` / ``metadata["short"]`` override the
spelling; booleans get ``--x/--no-x`` unless ``metadata["negatable"]`` is False; ``tuple[T, ...]``
is repeatable, a fixed ``tuple[A, B]`` takes that many values; ``metadata["min"]`` / ``["max"]``
become the flag's range, shown in ``--help``); a field whose metadata has
``nested=Cls`` becomes the flags of ``Cls``'s fields, prefixed with ``metadata["prefix"]``.
The command collects the flags back into the dataclass (:func:`build`), which validates
itself; its :class:`~dsr.errors.OptionError` is re-raised naming the flags
(:func:`flag_errors`), so the CLI prints ``--nbest: must be between 1 and --beam-size=2 ...``
where the library says ``nbest: must be between 1 and `beam_size`=2 ...``.
"""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import MISSING, Field, fields
from typing import Any, Optional

import typer

from dsr.errors import DsrUserError, OptionError


def _flag(f: Field, prefix: str = "") -> str:
    return f.metadata.get("flag") or "--" + (prefix + f.name).replace("_", "-")


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...


def _cli_type(hint: Any) -> tuple[Any, bool]:
    """(annotation typer understands, is_bool) for a dataclass field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return Optional[inner], False  # noqa: UP045  (a run-time annotation for typer, built from a type)
    if origin is tuple and (len(args) == 2 and args[1] is Ellipsis):
        return list[args[0]], False  # type: ignore[valid-type]
    return hint, hint is bool


def _walk(cls: type, prefix: str = "") -> Iterator[tuple[str, Field, Any, str]]:
    """(parameter name, field, type hint, prefix) of every flag of ``cls``, nested fields expanded."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        nested = f.metadata.get("nested")
        if nested is not None:
            yield from _walk(nested, prefix + f.metadata.get("prefix", ""))
            continue
        yield prefix + f.name, f, hints[f.name], prefix


def flags_of(cls: type) -> dict[str, str]:
    """Field name -> its flag, nested fields included under their own names (for messages)."""
    out: dict[str, str] = {}
    for _, f, _, prefix in _walk(cls):
        out.setdefault(f.name, _flag(f, prefix))
    return out


def _decls(f: Field, hint: Any, prefix: str) -> list[str]:
    flag = _flag(f, prefix)
    negatable = _cli_type(hint)[1] and f.metadata.get("negatable", True)
    decls = [f"{flag}/--no-{flag[2:]}"] if negatable else [flag]
    if "short" in f.metadata:
        decls.append(f.metadata["short"])
    return decls


def _typer_kwargs(f: Field) -> dict[str, Any]:
    """typer.Option arguments from the field's metadata: its help, and its range if it has one."""
    return {"help": f.metadata.get("help", ""), **{k: f.metadata[k] for k in ("min", "max") if k in f.metadata}}


def option_parameters(cls: type, required: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword-only typer parameter per flag of ``cls``; ``required`` fields must be given."""
    params = []
    for name, f, hint, prefix in _walk(cls):
        annotation = _cli_type(hint)[0]
        default = ... if name in required else _default(f)
        if isinstance(default, tuple) and typing.get_origin(annotation) is list:
            default = list(default)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation,
                default=typer.Option(default, *_decls(f, hint, prefix), **_typer_kwargs(f)),
            )
        )
    return params


def field_option(cls: type, name: str, **kwargs: Any) -> Any:
    """The typer option of one field of ``cls`` (for commands whose other flags are written by hand)."""
    for pname, f, hint, prefix in _walk(cls):
        if pname == name:
            return typer.Option(_default(f), *_decls(f, hint, prefix), **{**_typer_kwargs(f), **kwargs})
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from the command's parameters (nested dataclasses rebuilt)."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        nested = f.metadata.get("nested")
        if nested is not None:
            prefix = f.metadata.get("prefix", "")
            kwargs[f.name] = build(nested, {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)})
        elif f.name in values:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


@contextlib.contextmanager
def flag_errors(cls: type, extra: dict[str, str] | None = None) -> Iterator[None]:
    """Re-raise an :class:`OptionError` of ``cls`` (or of the stage run with it) naming the flags;
    ``extra`` maps the names of the command's other parameters to their flags (``{"cuts": "--cuts"}``)."""
    try:
        yield
    except OptionError as e:
        raise DsrUserError(e.for_flags({**flags_of(cls), **(extra or {})})) from e


def make_command(
    cls: type,
    body: Any,
    doc: str,
    leading: list[inspect.Parameter] = (),  # type: ignore[assignment]
    required: tuple[str, ...] = (),
) -> Any:
    """A typer command function: ``leading`` parameters, then the flags of ``cls``; calls
    ``body(**kwargs)`` with every parameter's value."""
    params = [*leading, *option_parameters(cls, required)]

    def command(**kwargs: Any) -> None:
        body(**kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = doc
    return command


__all__ = ["build", "field_option", "flag_errors", "flags_of", "make_command", "option_parameters"]
