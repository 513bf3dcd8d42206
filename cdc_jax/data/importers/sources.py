"""Reading published source files with errors that say where.

Published CoT data comes as JSON arrays (one object per item) or JSON Lines.
Every item read here remembers its file, index and line, so a missing field
or a truncated file raises :class:`SourceError` naming the file, the item
index and the line, never a bare ``KeyError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from cdc_jax.data import records as records_lib

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class SourceError(records_lib.RecordError):
  """A source file that cannot be imported: names the file, item and line."""

  def __init__(self, path: str | os.PathLike, message: str, *, item: int | None = None,
               line: int | None = None, field: str | None = None):
    where = ([f"item {item}"] if item is not None else []) + (
        [f"field '{field}'"] if field is not None else [])
    super().__init__(path, line, None, ": ".join(where + [message]))
    self.item, self.field = item, field


@dataclasses.dataclass(frozen=True)
class SourceItem:
  """One item of a source file: its data and where it came from.

  Attributes:
    path: the file.
    index: 0-based position in the file (array index or JSON Lines record).
    line: 1-based line where the item starts.
    data: the decoded JSON value.
  """
  path: Path
  index: int
  line: int
  data: Any

  @property
  def origin(self) -> str:
    """Short provenance reference: ``file.json#index``."""
    return f"{self.path.name}#{self.index}"

  def error(self, message: str, *, field: str | None = None) -> SourceError:
    """A :class:`SourceError` located at this item."""
    return SourceError(self.path, message, item=self.index, line=self.line, field=field)

  def get(self, field: str, kind: type | tuple[type, ...] = str, *,
          allow_empty: bool = False) -> Any:
    """The value of ``field``, checked to be of ``kind``; raises naming the item.

    Booleans are not accepted where numbers are asked for (JSON ``true`` is not 1).
    """
    if not isinstance(self.data, dict):
      raise self.error(f"expected a JSON object, got {type(self.data).__name__}")
    if field not in self.data:
      raise self.error("missing", field=field)
    value = self.data[field]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_bool = isinstance(value, bool) and bool not in kinds
    if wrong_bool or not isinstance(value, kinds):
      expected = " or ".join(k.__name__ for k in kinds)
      raise self.error(f"expected {expected}, got {type(value).__name__}", field=field)
    if isinstance(value, str) and not allow_empty and not value.strip():
      raise self.error("empty", field=field)
    return value


def _read_text(path: Path) -> str:
  try:
    return path.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise SourceError(path, "file not found") from None
  except UnicodeDecodeError as e:
    raise SourceError(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None


def read_json_array(path: str | os.PathLike) -> list[SourceItem]:
  """Reads a file holding one JSON array, item by item.

  Decoding item by item gives each item its line, and a truncated or broken
  file an error naming the item that could not be read.
  """
  path = Path(path)
  text = _read_text(path)
  pos, line = 0, 1

  def skip_space(p: int) -> int:
    while p < len(text) and text[p] in _WHITESPACE:
      p += 1
    return p

  def line_at(p: int) -> int:
    return text.count("\n", 0, p) + 1

  pos = skip_space(pos)
  if not text.startswith("[", pos):
    raise SourceError(path, "expected a JSON array (file does not start with '[')",
                      line=line_at(pos))
  pos = skip_space(pos + 1)
  items: list[SourceItem] = []
  last_pos = 0
  if text.startswith("]", pos):
    pos += 1
  else:
    while True:
      line += text.count("\n", last_pos, pos)
      last_pos = pos
      try:
        value, end = _DECODER.raw_decode(text, pos)
      except json.JSONDecodeError as e:
        raise SourceError(path, f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                          item=len(items), line=line) from None
      items.append(SourceItem(path, len(items), line, value))
      pos = skip_space(end)
      if text.startswith(",", pos):
        pos = skip_space(pos + 1)
      elif text.startswith("]", pos):
        pos += 1
        break
      else:
        where = "end of file" if pos >= len(text) else repr(text[pos])
        raise SourceError(path, f"invalid JSON after item {len(items) - 1}: expected ',' or "
                          f"']', got {where} (file truncated?)", line=line_at(pos))
  pos = skip_space(pos)
  if pos != len(text):
    raise SourceError(path, "extra data after the JSON array", line=line_at(pos))
  return items


def read_json_lines(path: str | os.PathLike) -> list[SourceItem]:
  """Reads a JSON Lines file: one JSON value a line (blank lines are an error)."""
  path = Path(path)
  text = _read_text(path)
  items = []
  for number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      raise SourceError(path, "empty line", item=len(items), line=number)
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise SourceError(path, f"invalid JSON: {e.msg} (column {e.colno})", item=len(items),
                        line=number) from None
    items.append(SourceItem(path, len(items), number, value))
  return items
