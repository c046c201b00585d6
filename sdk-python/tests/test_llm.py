"""THINK, LLM_REPORT, LLM_STATS and LLM_CONFIG through `CloveClient`, against a kernel whose
LLM is the simulated provider (conftest sets CLOVE_LLM_PROVIDER=simulated)."""

from __future__ import annotations

import json

from clove_sdk import CloveClient, SyscallOp


def test_think_answers_with_the_original_keys_and_ours(kernel):
    with CloveClient(kernel.socket) as c:
        r = c.think("x" * 40, max_tokens=7, system_instruction="be brief")
        assert r["success"] is True, r
        assert {"success", "content", "tokens"} <= set(r)
        assert r["provider"] == "simulated" and r["model"] == "simulated"
        # 40 + 8 bytes of prompt and instruction: 10 + 2 tokens in, 7 out.
        assert r["usage"] == {"input": 12, "output": 7}
        assert r["tokens"] == 19
        assert r["content"].startswith("[simulated answer")
        assert isinstance(r["queue_ms"], int)


def test_a_think_error_has_the_originals_empty_content(kernel):
    with CloveClient(kernel.socket) as c:
        r = c.think("hi", temperature=5.0)
        assert r == {"success": False, "error": r["error"], "code": "invalid_request", "content": ""}
        assert "temperature" in r["error"]


def test_async_think_comes_back_through_poll_async(kernel):
    with CloveClient(kernel.socket) as c:
        ack = c.think("later", max_tokens=3, async_=True, request_id=7)
        assert ack == {"success": True, "content": "", "tokens": 0, "async": True,
                       "request_id": 7, "status": "accepted"}
        polled = c.poll_async(wait=5)
        assert polled["count"] == 1, polled
        result = polled["results"][0]
        assert result["request_id"] == 7 and result["opcode"] == SyscallOp.SYS_THINK
        answer = json.loads(result["payload"])
        assert answer["success"] is True and answer["usage"]["output"] == 3


def test_llm_report_stats_and_config(kernel):
    with CloveClient(kernel.socket) as c:
        assert c.think("one")["success"] is True
        r = c.llm_report(25)
        assert r == {"success": True, "tokens": 25, "quota_exceeded": False}
        stats = c.llm_stats()
        assert stats["success"] is True and stats["provider"] == "simulated"
        assert stats["scheduler"]["policy"] == "vtc"
        [mine] = [a for a in stats["agents"] if a["agent_id"] == c.agent_id]
        assert mine["calls"] == 1 and mine["reported_tokens"] == 25
        assert mine["queued"] == 0 and mine["in_flight"] == 0
        # Reading the config changes nothing; a bad policy is refused with its name.
        assert c.llm_config()["scheduler"] == stats["scheduler"]
        bad = c.llm_config(scheduler="lottery")
        assert bad["success"] is False and bad["code"] == "invalid_request"
        assert "lottery" in bad["error"]
