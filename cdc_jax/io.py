"""Files: the project's cache directory, atomic writes, and the one file:line schema error.

Every writer of a file that a reader or a resumed job may open goes through
:func:`atomic_write_bytes` / :func:`atomic_write_text`: readers find the old
content or the new, never a partial file.

Every reader of a schema'd file (community records, results rows, per-example
outcomes) raises :class:`SchemaError` (or a subclass naming the domain), naming
the file, the line and the field: ``path:line: field 'name': what was expected``.
Validation of one object raises :class:`FieldError` (the field and what is
wrong); the reader adds file and line with :func:`located`. The ``require_*``
functions are the shared field checks; :func:`iter_json_lines` is the shared
JSON Lines reader (missing file, line limit, UTF-8, blank line, bad JSON).

Import it as ``from cdc_jax import io as io_lib`` so it never hides the
standard library's ``io``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

def default_cache_dir() -> Path:
  """``$CDC_CACHE_DIR`` or ``~/.cache/cdc_jax``: vocabularies, communities, XLA programs."""
  return Path(os.environ.get("CDC_CACHE_DIR", Path.home() / ".cache" / "cdc_jax"))


_UMASK = os.umask(0)
os.umask(_UMASK)


class SchemaError(ValueError):
  """A file's content that does not follow its schema, at ``path:line``, in ``field``.

  Attributes:
    path: the file (or directory) read.
    line: the 1-based line of a JSON Lines file; None for a whole file.
    field: the offending field (dotted for nested ones), None for the whole line.
    message: what is wrong, without the location.
  """

  def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str):
    self.path, self.line, self.field, self.message = str(path), line, field, message
    where = self.path if line is None else f"{self.path}:{line}"
    what = f"field '{field}': " if field else ""
    super().__init__(f"{where}: {what}{message}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temp file in the same directory + rename.

  Readers never see a partial file: they find the old content or the new.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; use the usual mode.
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
  atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------
# Schema errors of one object, located by the reader.


class FieldError(ValueError):
  """A schema error in one field of an object; :func:`located` adds file and line."""

  def __init__(self, field: str | None, message: str):
    self.field, self.message = field, message
    super().__init__(f"field '{field}': {message}" if field else message)


@contextlib.contextmanager
def located(path: str | os.PathLike, line: int | None, *,
            error: type[SchemaError] = SchemaError) -> Iterator[None]:
  """Re-raises a :class:`FieldError` raised inside as ``error(path, line, field, message)``.

  A ``TypeError`` (a dataclass built with arguments of the wrong kind) becomes
  an ``error`` for the whole line.
  """
  try:
    yield
  except FieldError as e:
    raise error(path, line, e.field, e.message) from None
  except TypeError as e:
    raise error(path, line, None, str(e)) from None


def check_fields(obj: Any, cls: type) -> dict[str, Any]:
  """``obj`` as a dict of the fields of dataclass ``cls``: no unknown, none required missing."""
  if not isinstance(obj, dict):
    raise FieldError(None, f"expected a JSON object, got {json_type(obj)}")
  fields = dataclasses.fields(cls)
  known = sorted(f.name for f in fields)
  unknown = sorted(set(obj) - set(known))
  if unknown:
    raise FieldError(unknown[0], f"unknown field (expected {known})")
  for f in fields:
    if (f.name not in obj and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING):
      raise FieldError(f.name, "missing")
  return obj


def json_type(value: Any) -> str:
  """How a JSON reader names the type of ``value``: 'an object', 'a list', ..."""
  return {dict: "an object", list: "a list", str: "a string", type(None): "null",
          bool: "a boolean", int: "an integer", float: "a number"}.get(
              type(value), type(value).__name__)


# ---------------------------------------------------------------------------
# Field checks: each returns the value or raises FieldError naming the field.


def is_int(value: Any) -> bool:
  """An int that is not a bool."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  """A finite int or float that is not a bool."""
  return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _or_null(words: str, optional: bool) -> str:
  return f"{words} or null" if optional else words


def require_str(field: str, value: Any, *, allow_empty: bool = False,
                optional: bool = False) -> str | None:
  """A string (non-blank unless ``allow_empty``; None too if ``optional``)."""
  if value is None and optional:
    return None
  if isinstance(value, str) and (allow_empty or value.strip()):
    return value
  words = "a string" if allow_empty else "a non-empty string"
  raise FieldError(field, f"expected {_or_null(words, optional)}, got {value!r}")


def require_one_of(field: str, value: Any, options: Collection[Any]) -> Any:
  """One of ``options``."""
  if value not in options:
    raise FieldError(field, f"{value!r} is not one of {tuple(options)}")
  return value


def _range_words(kind: str, low: float | None, high: float | None, low_open: bool) -> str:
  """'a positive integer', 'a number in [0, 1]', 'a non-negative finite number', ..."""
  if low is not None and high is not None:
    return f"a {kind} in {'(' if low_open else '['}{low}, {high}]"
  if low == 0 and not low_open:
    return f"a non-negative {kind}"
  if (low == 0 and low_open) or (low == 1 and kind == "integer" and not low_open):
    return f"a positive {kind}"
  article = "an" if kind[0] in "aeiou" else "a"
  if low is not None:
    return f"{article} {kind} {'>' if low_open else '>='} {low}"
  return f"{article} {kind}"


def _require_in_range(field: str, value: Any, ok: bool, kind: str, low: float | None,
                      high: float | None, low_open: bool, optional: bool, key: str | None):
  if value is None and optional:
    return None
  if ok and (low is None or (value > low if low_open else value >= low)) and (
      high is None or value <= high):
    return value
  words = _or_null(_range_words(kind, low, high, low_open), optional)
  prefix = "" if key is None else f"{key}: "
  raise FieldError(field, f"{prefix}expected {words}, got {value!r}")


def require_int(field: str, value: Any, *, low: int | None = None, high: int | None = None,
                optional: bool = False, key: str | None = None) -> int | None:
  """An integer (not a bool) in ``[low, high]``; ``key`` names the entry of a mapping."""
  return _require_in_range(field, value, is_int(value), "integer", low, high, False,
                           optional, key)


def require_number(field: str, value: Any, *, low: float | None = None,
                   high: float | None = None, low_open: bool = False, optional: bool = False,
                   key: str | None = None) -> float | None:
  """A finite number (not a bool) in ``[low, high]`` (``(low, high]`` if ``low_open``).

  Without an upper bound the words say 'finite' (NaN and infinities are refused).
  """
  kind = "number" if high is not None else "finite number"
  return _require_in_range(field, value, is_number(value), kind, low, high, low_open,
                           optional, key)


def check(field: str, validate: Callable[[Any], Any], value: Any) -> Any:
  """Runs ``validate(value)`` (e.g. ``names.validate_name``); its ValueError names ``field``."""
  try:
    validate(value)
  except ValueError as e:
    raise FieldError(field, str(e)) from None
  return value


# ---------------------------------------------------------------------------
# JSON Lines reading.


def decode_utf8(path: str | os.PathLike, data: bytes, first_line: int, *,
                error: type[SchemaError] = SchemaError) -> str:
  """``data`` as text; a non-UTF-8 byte raises ``error`` naming its line and column."""
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = first_line + data.count(b"\n", 0, e.start)
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    raise error(path, line, None, f"not UTF-8: byte 0x{data[e.start]:02x} at column "
                f"{column}") from None


def iter_json_lines(path: str | os.PathLike, *, error: type[SchemaError] = SchemaError,
                    what: str = "object", max_line_bytes: int | None = None,
                    limit_name: str = "") -> Iterator[tuple[int, Any]]:
  """Yields ``(line_number, value)`` of a JSON Lines file, one JSON value a line.

  Raises ``error`` naming the file and line for a missing file, a line over
  ``max_line_bytes`` (refused after reading at most that many bytes of it;
  ``limit_name`` says which setting to raise), a non-UTF-8 byte, a blank line
  (``what`` names what a line holds) or invalid JSON.
  """
  path = Path(path)
  try:
    handle = path.open("rb")
  except FileNotFoundError:
    raise error(path, None, None, "file not found") from None
  except IsADirectoryError:
    raise error(path, None, None, "is a directory, expected a JSON Lines file") from None
  with handle:
    number = 0
    while raw := (handle.readline() if max_line_bytes is None
                  else handle.readline(max_line_bytes + 1)):
      number += 1
      if max_line_bytes is not None and len(raw) > max_line_bytes and not raw.endswith(b"\n"):
        raise error(path, number, None, f"line longer than {max_line_bytes} bytes"
                    + (f" ({limit_name})" if limit_name else ""))
      line = decode_utf8(path, raw, number, error=error)
      if not line.strip():
        raise error(path, number, None, f"empty line (one {what} a line, no blank lines)")
      try:
        value = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(path, number, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
      yield number, value
