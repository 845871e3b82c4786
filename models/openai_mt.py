"""Machine translation through an OpenAI-compatible chat endpoint (OpenAI, or a local vLLM/llama.cpp/Ollama server).

All lines go in one request as a numbered JSON list, so the model sees the whole scene; the reply must be a
JSON list of {"n", "text"} objects in the same numbering. A malformed reply is retried once.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import httpx

from dubforge.core.errors import StageError, TransientError
from dubforge.core.files import fingerprint
from dubforge.core.languages import display_name
from dubforge.models.base import Translator

TIMEOUT_S = 300.0
PROMPT_VERSION = 1
SYSTEM_PROMPT = """You translate film and video dialogue for dubbing.
Translate every line from {source} to {target}. Rules:
- Faithful meaning, tone and register; natural, speakable {target} that an actor can say aloud.
- Keep each line about as long as the original when spoken (similar syllable count): it must fit the same time.
- One output line per input line, same numbering; never merge, split, skip or add lines; no notes.
- Keep names, numbers and line breaks inside a line.
Input: a JSON list of objects {{"n": number, "text": line}}.
Reply with ONLY a JSON list of objects {{"n": number, "text": translation}}, one per input line."""
REWRITE_PROMPT = """You shorten {language} dubbing lines so an actor can say them in the time of the original.
Rewrite the line in at most {max_chars} characters: same meaning as the source, natural spoken {language},
names and numbers kept. Input: a JSON object {{"source": original line, "line": current translation}}.
Reply with ONLY the rewritten line, no quotes, no notes."""
GLOSSARY_PROMPT = "Project glossary: wherever a line uses one of these terms, translate it exactly as given:\n"


class MalformedReply(ValueError):
    pass


def parse_reply(content: str, count: int) -> list[str]:
    """Translations in input order from a model reply, or MalformedReply.

    Accepts the JSON list (possibly inside a ```json fence or surrounded by prose), a bare list of strings, or
    an object wrapping the list. Items are placed by their "n" when present.
    """
    match = re.search(r"\[.*\]", content, re.DOTALL)
    if not match:
        raise MalformedReply("no JSON list in the reply")
    try:
        items = json.loads(match.group(0))
    except ValueError as exc:
        raise MalformedReply(f"the reply's list is not valid JSON ({exc})") from exc
    if len(items) != count:
        raise MalformedReply(f"expected {count} translations, got {len(items)}")
    out: list[str | None] = [None] * count
    for pos, item in enumerate(items):
        if isinstance(item, str):
            out[pos] = item
            continue
        if not isinstance(item, dict) or not isinstance(item.get("text", item.get("translation")), str):
            raise MalformedReply(f"item {pos + 1} is not an object with a 'text' string")
        n = item.get("n", pos + 1)
        if not isinstance(n, int) or not 1 <= n <= count or out[n - 1] is not None:
            raise MalformedReply(f"item {pos + 1} has a bad or repeated number {n!r}")
        out[n - 1] = item.get("text", item.get("translation"))
    return [str(t).strip() for t in out]


class OpenAITranslator(Translator):
    name = "openai"

    def __init__(self, model: str | None = None, endpoint: str | None = None, api_key_env: str | None = None):
        if not endpoint or not model:
            raise StageError(
                "the openai backend needs 'endpoint' (base URL such as http://127.0.0.1:8000/v1) and 'model'"
            )
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            raise StageError(f"the openai backend reads its API key from ${api_key_env}, which is not set")

    def _request(self, texts: Sequence[str], source: str, target: str, glossary: dict[str, str] | None = None) -> str:
        lines = [{"n": i + 1, "text": t} for i, t in enumerate(texts)]
        system = SYSTEM_PROMPT.format(source=display_name(source), target=display_name(target))
        if glossary:
            system += "\n" + GLOSSARY_PROMPT + "\n".join(
                f"- {term!r}: keep as is" if term == wanted else f"- {term!r} -> {wanted!r}"
                for term, wanted in glossary.items())
        return self._chat(system, json.dumps(lines, ensure_ascii=False))

    def _chat(self, system: str, user: str) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": 0,
            "seed": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        url = f"{self.endpoint}/chat/completions"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=TIMEOUT_S)
        except httpx.ConnectError as exc:
            raise TransientError(f"cannot connect to the translation server at {url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"the translation server at {url} did not answer within {TIMEOUT_S:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"request to {url} failed: {exc}") from exc
        if response.status_code >= 400:
            busy = response.status_code == 429 or response.status_code >= 500  # worth a retry; 4xx are not
            raise (TransientError if busy else StageError)(
                f"the translation server at {url} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StageError(f"{url} did not answer like an OpenAI chat completion: {response.text[:300]}") from exc

    def translate(self, texts: Sequence[str], source: str, target: str,
                  glossary: dict[str, str] | None = None) -> list[str]:
        """`glossary`: source term -> required translation (the term itself: do not translate)."""
        todo = [i for i, t in enumerate(texts) if str(t).strip()]
        out = [""] * len(texts)
        if not todo:
            return out
        wanted = [str(texts[i]).strip() for i in todo]
        problem = None
        for _attempt in range(2):
            content = self._request(wanted, source, target, glossary)
            try:
                for i, text in zip(todo, parse_reply(content, len(wanted))):
                    out[i] = text
                return out
            except MalformedReply as exc:
                problem = exc
        raise StageError(
            f"the model {self.model!r} at {self.endpoint} gave an unusable reply twice for {len(wanted)} lines: {problem}"
        )

    def shorten(self, text: str, source_text: str, language: str, max_chars: int) -> str:
        """An isometric rewrite: `text` (a dubbing line in `language`) said in at most `max_chars` characters, the
        meaning of `source_text` kept. One line of plain text, or StageError."""
        reply = self._chat(
            REWRITE_PROMPT.format(language=display_name(language), max_chars=max_chars),
            json.dumps({"source": source_text, "line": text}, ensure_ascii=False))
        line = " ".join(reply.strip().strip('"').split())
        if not line or "\n" in reply.strip():
            raise StageError(f"the model {self.model!r} did not answer with one line: {reply[:200]!r}")
        return line

    def fingerprint(self) -> str:
        return fingerprint(self.name, self.endpoint, self.model, PROMPT_VERSION, SYSTEM_PROMPT, GLOSSARY_PROMPT)
