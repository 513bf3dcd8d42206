"""Chat prompt formats of the teacher models, without a Jinja dependency.

We recognise the chat template stored with a model (GGUF
``tokenizer.chat_template`` or ``tokenizer_config.json``) and render it in
Python: ChatML (``<|im_start|>role\\n...<|im_end|>\\n``, SmolLM2 and Qwen) with
the template's default system prompt, and the Llama-3 header format.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

STYLES = ("chatml", "llama3")
ROLES = ("system", "user", "assistant")
# SmolLM2's template: {% if loop.first and messages[0]['role'] != 'system' %}
# {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}{% endif %}; the newline may be
# stored as a real newline or as a Jinja escape.
_CHATML_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """How to turn messages into a prompt string.

  style: "chatml" or "llama3".
  default_system: system prompt inserted when the first message is not a system one.
  """
  style: str = "chatml"
  default_system: str | None = None

  def __post_init__(self):
    if self.style not in STYLES:
      raise ValueError(f"ChatFormat.style={self.style!r}: expected one of {STYLES}")


def chat_format_from_template(template: str | None) -> ChatFormat:
  """The ChatFormat a stored Jinja chat template implements; raises if unknown."""
  if not template:
    raise ValueError("the model has no chat template (tokenizer.chat_template)")
  if "<|im_start|>" in template:
    match = _CHATML_DEFAULT_SYSTEM.search(template)
    default = None
    if match and "+" not in match.group(1):  # A literal, not message['content'] concatenation.
      default = match.group(1).replace("\\n", "\n")
    return ChatFormat(style="chatml", default_system=default)
  if "<|start_header_id|>" in template:
    return ChatFormat(style="llama3", default_system=None)
  raise ValueError(f"unrecognised chat template (not ChatML or Llama-3): {template[:120]!r}...")


def render_chat(
    messages: Sequence[Mapping[str, str]],
    *,
    fmt: ChatFormat,
    add_generation_prompt: bool = True,
) -> str:
  """The prompt text of ``messages`` (dicts with 'role' and 'content').

  Matches the model's Jinja template output; for Llama-3 the BOS token is
  left to the tokenizer (``Tokenizer.add_bos``).
  """
  for i, m in enumerate(messages):
    if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
      raise ValueError(f"messages[{i}]={dict(m)!r}: expected role in {ROLES} and a str content")
  parts = []
  if fmt.default_system is not None and (not messages or messages[0]["role"] != "system"):
    messages = [{"role": "system", "content": fmt.default_system}, *messages]
  for m in messages:
    if fmt.style == "chatml":
      parts.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    else:
      parts.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>")
  if add_generation_prompt:
    parts.append("<|im_start|>assistant\n" if fmt.style == "chatml"
                 else "<|start_header_id|>assistant<|end_header_id|>\n\n")
  return "".join(parts)


def user_prompt(text: str, *, fmt: ChatFormat, system: str | None = None) -> str:
  """A one-turn prompt: optional system message, the user's ``text``, then the assistant header."""
  messages = [] if system is None else [{"role": "system", "content": system}]
  return render_chat([*messages, {"role": "user", "content": text}], fmt=fmt)
