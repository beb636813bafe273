"""Turn chat messages into a prompt string with the model's own chat template.

A model directory that ships a template (``chat_template`` in ``tokenizer_config.json`` or a
``chat_template.jinja`` file) is rendered with it, so quantgate prompts a model exactly the way its
authors trained it. A model without one gets ``DEFAULT_CHAT_TEMPLATE``: ChatML
(``<|im_start|>role ... <|im_end|>``), the most widely trained format among open models, with tools
listed as JSON in the system turn and assistant tool calls written Hermes-style as
``<tool_call>{"name": ..., "arguments": ...}</tool_call>``. The trade-off: a base model that never
saw ChatML still answers, but less well than with its own format; pass ``--chat-template`` to
override. Templates can refuse messages (Gemma's raises on a system turn, Mistral's on turns
that do not alternate): that is a ``ChatTemplateError`` carrying the template's own message, which
the gateway answers with a 400, not a bare jinja exception.
"""

from __future__ import annotations

from typing import Any

from quantgate.errors import ChatTemplateError

__all__ = ["DEFAULT_CHAT_TEMPLATE", "render_chat"]

DEFAULT_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n{% endif %}"
    "You can call these tools. Answer a call as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>."
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message.get('content') %}{{ message['content'] }}{% endif %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "<tool_call>{\"name\": \"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] }}}</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    chat_template: str | None = None,
) -> str:
    """Render ``messages`` (and OpenAI-style ``tools``) into the prompt text the model continues.

    ``chat_template`` overrides the tokenizer's own; a tokenizer without one uses the default. A
    tokenizer with several named templates uses ``tool_use`` when tools are passed, else ``default``.
    """
    from jinja2.exceptions import TemplateError

    template = chat_template or getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    if isinstance(template, dict):  # named templates (Hermes, Command-R): pick as transformers does
        name = "tool_use" if tools and "tool_use" in template else "default"
        if name not in template:
            raise ChatTemplateError(f"the model has chat templates {', '.join(sorted(template))} and none named "
                                    "'default'; pass one with --chat-template")
        template = template[name]
    try:
        rendered = tokenizer.apply_chat_template(
            messages,
            tools=tools or None,
            chat_template=template,
            add_generation_prompt=True,
            tokenize=False,
        )
    except TemplateError as exc:
        raise ChatTemplateError(f"the model's chat template refused these messages: {exc}") from None
    return str(rendered)
