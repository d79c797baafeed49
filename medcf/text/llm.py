"""Optional report reader backed by an OpenAI-compatible chat endpoint.

Off by default: the rule reader needs no network and gives the same answer
every time. Users who run a local or hosted model point MedCF at it with
``--llm-url`` (or ``MEDCF_LLM_URL``), ``--llm-model`` (``MEDCF_LLM_MODEL``) and an
API key read from the environment variable named by ``--llm-key-env``
(default ``MEDCF_LLM_API_KEY``; never on the command line, where ``ps`` shows it).
The answer must be the schema's JSON (:mod:`medcf.text.schema`); anything else
is refused in one line, so a chatty or hallucinating model cannot hand the
editor an unknown finding name.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from medcf.errors import InputError
from medcf.text.schema import Mention, validate_report
from medcf.vocab import ReportFinding

SYSTEM_PROMPT = (
    "You read chest radiograph reports. Answer with JSON only, exactly "
    '{"findings": [{"finding": str, "present": bool, "uncertain": bool, '
    '"laterality": "left"|"right"|"bilateral"|null, "zone": "upper"|"middle"|"lower"|null, '
    '"severity": "mild"|"moderate"|"severe"|null, "evidence": str}]}. '
    f"finding is one of: {', '.join(m.value for m in ReportFinding)}. "
    "One entry per statement about a finding in FINDINGS or IMPRESSION (ignore INDICATION, HISTORY, "
    "COMPARISON); present=false for negated findings; uncertain=true for hedged ones (possible, may "
    "represent, cannot exclude, likely); small/trace/minimal/borderline = mild, large/massive = severe; "
    "evidence is the sentence that says it."
)


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key_env: str = "MEDCF_LLM_API_KEY"
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls, base_url: str | None = None, model: str | None = None,
                 api_key_env: str | None = None) -> "LLMConfig":
        url = base_url or os.environ.get("MEDCF_LLM_URL")
        name = model or os.environ.get("MEDCF_LLM_MODEL")
        if not url or not name:
            raise InputError("the llm backend needs --llm-url and --llm-model (or MEDCF_LLM_URL and MEDCF_LLM_MODEL)")
        return cls(url.rstrip("/"), name, api_key_env or "MEDCF_LLM_API_KEY")


class LLMReader:
    name = "llm"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config

    def _endpoint(self) -> str:
        base = self.config.base_url
        return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")

    def parse(self, text: str) -> list[Mention]:
        body = json.dumps({
            "model": self.config.model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self._endpoint(), data=body, headers=headers, method="POST")
        where = f"llm backend {self._endpoint()}"
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise InputError(f"{where}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise InputError(f"{where}: cannot connect ({reason})") from None
        except json.JSONDecodeError:
            raise InputError(f"{where}: the answer is not JSON") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise InputError(f"{where}: no choices[0].message.content in the answer") from None
        try:
            data = json.loads(_strip_fence(content))
        except (json.JSONDecodeError, TypeError):
            raise InputError(f"{where}: the model's message is not JSON") from None
        return validate_report(data, source=where)

    def parse_many(self, texts: Iterable[str]) -> Iterator[list[Mention]]:
        return (self.parse(text) for text in texts)


def _strip_fence(content: str) -> str:
    """Models often wrap JSON in a ```json fence despite being asked not to."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text
