"""Building the prompts the policy sees: the augmentation request, and training prompts for children.

The augmentation request is rendered with the tokenizer's own chat template when it has one (the
reference hard-coded one model family's template, B6) and as a completion-style prompt ending in the
NEW tag otherwise. Children are made from their parent's training prompt by swapping the parent's bare
problem for the new one, so any instruction wrapper or system prompt the seeds carry is kept: children
and seeds look the same to the policy and to the reward functions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from ._format import DEFAULT_FORMAT, DEFAULT_TEMPLATE, TaggedFormat

__all__ = ["PromptBuilder"]

Prompt = str | list[dict[str, Any]]


class PromptBuilder:
    """Renders augmentation requests and child prompts.

    tokenizer: used for its chat template (``apply_chat_template``); may be ``None`` for raw prompts.
    template: the request text, with ``{problem}`` and the tag placeholders (see ``DEFAULT_TEMPLATE``).
    fmt: the tagged answer format.
    system_prompt: optional system message (chat) or preamble (raw).
    use_chat_template: ``None`` = use it when the tokenizer has one.
    chat_template_kwargs: extra keyword arguments for ``apply_chat_template`` (e.g. ``enable_thinking=False``).
    problem_pattern: regex whose group ``problem`` (or group 1) is the bare problem inside a training
        prompt with an instruction wrapper, e.g. ``r"problem\\.\\n\\n(?P<problem>.*)\\n\\nRemember"``.
    extract_problem: a function ``prompt -> bare problem`` instead of ``problem_pattern``.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        template: str | None = None,
        fmt: TaggedFormat | None = None,
        system_prompt: str | None = None,
        use_chat_template: bool | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        problem_pattern: str | None = None,
        extract_problem: Callable[[Prompt], str] | None = None,
    ) -> None:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ValueError("PromptBuilder: use_chat_template=True, but the tokenizer has no chat_template")
        self.tokenizer = tokenizer
        self.template = DEFAULT_TEMPLATE if template is None else template
        if "{problem}" not in self.template:
            raise ValueError("PromptBuilder: the template must contain the {problem} placeholder")
        self.fmt = DEFAULT_FORMAT if fmt is None else fmt
        self.system_prompt = system_prompt
        self.uses_chat_template = has_template if use_chat_template is None else bool(use_chat_template)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._pattern = re.compile(problem_pattern, re.S) if problem_pattern else None
        self._extract = extract_problem

    # ------------------------------------------------------------------ requests

    @property
    def cued(self) -> bool:
        """Raw prompts end with the NEW tag, so the response may start with the problem itself."""
        return not self.uses_chat_template

    @property
    def add_special_tokens(self) -> bool:
        """How to tokenize ``build`` output: a rendered chat template already holds its special tokens."""
        return not self.uses_chat_template

    def build(self, problem: str) -> str:
        """The augmentation request for one parent problem."""
        body = self.fmt.fill(self.template, problem.strip())
        if self.uses_chat_template:
            messages = [{"role": "user", "content": body}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return self._chat(messages)
        pre = f"{self.system_prompt}\n\n" if self.system_prompt else ""
        return f"{pre}{body}{self.fmt.cue}"

    def example(self, original: str, new: str, difficulty: float) -> tuple[str, str]:
        """A (request, well-formed answer) pair, e.g. for a supervised warm-up of a small model."""
        target = self.fmt.render(new, difficulty)
        return self.build(original), (target if self.cued else self.fmt.cue + target)

    # ------------------------------------------------------------------ training prompts

    def problem_of(self, prompt: Prompt) -> str:
        """The bare problem inside a training prompt (plain text or chat messages)."""
        if self._extract is not None:
            return str(self._extract(prompt)).strip()
        text = _content(prompt)
        if self._pattern is not None:
            m = self._pattern.search(text)
            if m is not None:
                return (m.group("problem") if "problem" in m.groupdict() else m.group(1)).strip()
        return text.strip()

    def make_child(self, parent: Prompt, problem: str) -> Prompt:
        """The child's training prompt: the parent's prompt with its bare problem replaced."""
        old = self.problem_of(parent)
        text = _content(parent)
        new_text = text.replace(old, problem, 1) if old and old in text else problem
        if isinstance(parent, str):
            return new_text
        child = copy.deepcopy(parent)
        i = _last_user(child)
        child[i] = {**child[i], "content": new_text}
        return child

    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """A training prompt as generation input: (text, add_special_tokens), as TRL renders it."""
        if isinstance(prompt, str):
            return prompt, True
        return self._chat(prompt), False

    def _chat(self, messages: list[dict[str, Any]]) -> str:
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("PromptBuilder: chat messages need a tokenizer with a chat_template")
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )
        if not isinstance(out, str):
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(out).__name__}, expected str")
        return out


def _last_user(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    raise ValueError("a conversational prompt needs a user message holding the problem")


def _content(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise TypeError(f"expected a prompt string or a list of chat messages, got {type(prompt).__name__}")
    content = prompt[_last_user(prompt)].get("content", "")
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)
