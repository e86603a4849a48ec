"""Free text in a request body, as every service that reads OpenAI-style bodies checks it.

JSON may carry lone UTF-16 surrogates (``"\\ud800"`` is valid JSON), which no UTF-8 text can
hold: hashing, tokenizing or forwarding such a string fails deep inside a handler. :data:`Text`
refuses it where the body is read, with the pydantic error type ``invalid_unicode`` (the gateway
answers 400 ``invalid_unicode``; see ``gateway.app``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

#: the pydantic error type of a string that UTF-8 cannot encode
INVALID_UNICODE = "invalid_unicode"


def utf8_text(v: str) -> str:
    """``v`` unchanged if UTF-8 can encode it; else a ``invalid_unicode`` validation error."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            INVALID_UNICODE, "text holds a lone UTF-16 surrogate at character {position}: not valid Unicode",
            {"position": exc.start}) from None
    return v


#: Any Unicode string that UTF-8 can encode.
Text = Annotated[str, AfterValidator(utf8_text)]
