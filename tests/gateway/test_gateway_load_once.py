"""The gateway's tokenizers load once, however many first requests arrive together.

`make demo`'s five concurrent chat completions on a fresh stack each parsed the SmolLM2 GGUF for
the chat tokenizer in their own thread (a lazy load with no lock): 20 s to the first token
instead of 4.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

from common.chat_tokenizer import ChatTokenizer
from gateway.context import Context, LoadOnce


def test_concurrent_first_uses_load_the_chat_tokenizer_once_and_all_get_that_one() -> None:
    loads: list[int] = []

    def load() -> ChatTokenizer:
        loads.append(threading.get_ident())
        return ChatTokenizer.from_gguf()

    once: LoadOnce[ChatTokenizer] = LoadOnce(load)
    start = threading.Barrier(4)

    def first_use(_: int) -> ChatTokenizer:
        start.wait()
        return once.get()

    loaded_before = once.loaded
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(first_use, range(4)))
    assert not loaded_before and len(loads) == 1
    assert all(t is got[0] for t in got) and once.loaded and once.get() is got[0]
    assert got[0].decode(got[0].encode("Tell me about dragons.")) == "Tell me about dragons."


def test_a_failed_load_is_not_kept_and_the_next_use_loads_again() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("model files not readable yet")
        return "loaded"

    once = LoadOnce(flaky)
    try:
        once.get()
    except OSError:
        pass
    else:  # pragma: no cover - the first load must fail
        raise AssertionError("the first load should have failed")
    assert not once.loaded and once.get() == "loaded" and len(attempts) == 2


def test_the_gateway_context_loads_both_tokenizers_through_load_once() -> None:
    factories: dict[str, Any] = {f.name: f.default_factory for f in fields(Context)}
    for name in ("_tokenizer", "_chat_tokenizer"):
        assert isinstance(factories[name](), LoadOnce), name
