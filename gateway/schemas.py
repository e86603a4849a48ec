"""The API's request and response models.

Free text (:data:`common.text.Text`) is any Unicode string that UTF-8 can encode (a lone
surrogate is refused with 400 ``invalid_unicode``; see ``gateway.app``).
Amounts (token wei, uint256) are decimal strings in responses, because JSON numbers lose
precision above 2**53 in browsers; requests accept either numbers or decimal strings.
Addresses come back EIP-55 checksummed, hashes as ``0x`` + 64 lower-case hex.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from eth_utils import is_address, to_checksum_address
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema

from common.text import Text
from contracts import jobstate

UINT40 = 2**40 - 1
UINT96 = 2**96 - 1
UINT256 = 2**256 - 1


def _checksum(v: str) -> str:
    if not is_address(v):
        raise ValueError(f"not an address: {v!r}")
    return str(to_checksum_address(v))


def _int_from_str(v: Any) -> Any:
    """Accepts decimal or 0x-hex strings for integers (wallets send both)."""
    if isinstance(v, str):
        s = v.strip()
        if s.lower().startswith("0x"):
            try:
                return int(s, 16)
            except ValueError:
                return v
        if s.isdigit():
            return int(s)
    return v


#: A token id list (OpenAI accepts token arrays as embeddings input).
TokenIds = Annotated[list[StrictInt], Field(max_length=8192)]

Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x" + "ab" * 20]),
                    AfterValidator(_checksum)]
Hash32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$"), AfterValidator(str.lower)]
HexBytes = Annotated[str, Field(pattern=r"^0x([0-9a-fA-F]{2}){1,2048}$")]
Uint40 = Annotated[int, BeforeValidator(_int_from_str), Field(ge=0, le=UINT40)]
Uint96 = Annotated[int, BeforeValidator(_int_from_str), Field(ge=0, le=UINT96)]
Uint256 = Annotated[int, BeforeValidator(_int_from_str), Field(ge=0, le=UINT256)]
Amount = Annotated[str, Field(pattern=r"^[0-9]+$", description="token wei, decimal string")]
#: a provider region as providers register it on-chain (``eu-west``, ``us-east``, ...)
Region = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", examples=["eu-west"])]


def _job_state(value: str) -> str:
    jobstate.parse(value)  # ValueError: pydantic answers 422 naming the accepted labels
    return value


#: a job state by its label (:data:`contracts.jobstate.LABELS`)
JobStatus = Annotated[str, AfterValidator(_job_state),
                      WithJsonSchema({"type": "string", "enum": list(jobstate.LABELS)})]


# ---------------------------------------------------------------------------- errors


class ErrorBody(BaseModel):
    reason: str = Field(description="machine-readable reason, e.g. nonce_used")
    message: str
    type: str = Field(description="OpenAI-style error type")
    code: str = Field(description="the same as reason (OpenAI clients read `code`)")
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------------------- jobs


class JobRequestIn(BaseModel):
    """The EIP-712 ``JobRequest`` the client signed (camelCase as in the typed data, or snake_case)."""

    model_config = ConfigDict(populate_by_name=True)

    client: Address
    model_id: Hash32 = Field(alias="modelId")
    input_hash: Hash32 = Field(alias="inputHash")
    max_payment: Uint96 = Field(alias="maxPayment")
    deadline: Uint40
    nonce: Uint256


class PermitIn(BaseModel):
    """An EIP-2612 permit for the market to pull the escrow (instead of a prior approval)."""

    value: Uint256
    deadline: Uint256
    v: int = Field(ge=0, le=255)
    r: Hash32
    s: Hash32


class JobSubmission(BaseModel):
    request: JobRequestIn
    signature: HexBytes = Field(description="the client's EIP-712 signature of `request`")
    permit: PermitIn | None = None
    input: Text | None = Field(
        default=None, description='the job input itself: the exact UTF-8 text whose keccak256 is '
        'inputHash, in the job format {"texts": [...]}')
    blob_id: Hash32 | None = Field(default=None, description="an uploaded blob (POST /v1/blobs) instead of `input`")
    chain_id: int | None = Field(default=None, ge=0, description="the chain id the client signed for (checked)")
    verifying_contract: Address | None = Field(
        default=None, description="the market address the client signed for (checked)")


class JobPostedOut(BaseModel):
    """The answer to a relayed job (202): the transaction is broadcast, not mined yet."""

    tx_hash: str = Field(description="the relayed transaction; poll status_url for its outcome")
    status: Literal["pending"] = "pending"
    status_url: str = Field(description="GET it until status is mined (job_id set) or reverted/failed")
    client: str
    input_hash: str


class RelayError(BaseModel):
    reason: str = Field(description="machine-readable, as in error answers (e.g. nonce_used)")
    revert: str | None = Field(default=None, description="the contract's custom error, when known")
    message: str


class RelayOut(BaseModel):
    """A relayed job's transaction, from broadcast to outcome."""

    tx_hash: str
    kind: Literal["signed", "api_key"]
    status: Literal["pending", "mined", "reverted", "failed"]
    client: str
    job_id: int | None = Field(default=None, description="set once mined")
    block_number: int | None = None
    mined_tx: str | None = Field(default=None, description="the hash mined (differs after a fee bump)")
    job_url: str | None = Field(default=None, description="the job's state, once mined")
    error: RelayError | None = Field(default=None, description="why it reverted or failed (nothing was charged)")
    created_at: int
    updated_at: int


class StateEntry(BaseModel):
    status: JobStatus
    block: int
    tx_hash: str
    at: int


class JobOut(BaseModel):
    job_id: int
    status: JobStatus
    client: str
    provider: str | None
    model_id: str
    input_hash: str
    output_hash: str | None
    max_payment: Amount
    price_per_unit: Amount
    payment: Amount
    collateral: Amount
    units: Amount
    deadline: int
    challenge_end: int
    relayer: str | None
    provider_amount: Amount | None = None
    fee: Amount | None = None
    client_refund: Amount | None = None
    refund_amount: Amount | None = None
    penalty: Amount | None = None
    history: list[StateEntry]
    updated_block: int
    paid_by: str | None = Field(
        default=None, description="the wallet that paid, when this gateway posted the job for one of its API keys "
                                  "(the on-chain client is then the gateway's relayer)")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: int | None = Field(description="pass as `cursor` for the next page; null at the end")


class ReceiptOut(BaseModel):
    job_id: int
    provider: str
    output_hash: str
    units: Amount
    model_hash: str
    runtime_hash: str
    gpu_class: str
    payment: Amount
    challenge_end: int
    block: int
    tx_hash: str
    timestamp: int


class ChallengeOut(BaseModel):
    challenger: str
    bond: Amount
    committee: list[str]
    status: str
    provider_won: bool | None
    tx_hash: str


class Verification(BaseModel):
    output_available: bool
    output_hash_matches_receipt: bool
    receipt_on_chain: bool
    challenged: bool
    settled: bool
    summary: str


class JobResultOut(BaseModel):
    job: JobOut
    receipt: ReceiptOut
    challenge: ChallengeOut | None
    verification: Verification
    output_base64: str | None
    output_size: int | None
    embeddings: list[list[float]] | None = Field(description="the output as float32 rows (embedding jobs)")


class TypedDataIn(BaseModel):
    client: Text = Field(description="the signing wallet")
    input: Text = Field(description='the job input, as it will be sent with the job ({"texts": [...]})')
    model_id: Text | None = Field(default=None, description="default: the first active model")
    max_payment: int | None = Field(default=None, ge=1, le=UINT96, description="default: tokens x price")
    deadline_s: int | None = Field(default=None, ge=60, le=30 * 86400, description="seconds from now")


class TypedDataOut(BaseModel):
    typed_data: dict[str, Any] = Field(description="the eth_signTypedData_v4 payload")
    units: int | None = Field(description="tokens counted in the stored input, when the gateway has it")
    price_per_unit: Amount
    input_stored: bool


# ---------------------------------------------------------------------------- blobs


class BlobOut(BaseModel):
    id: str
    size: int


# ---------------------------------------------------------------------------- network


class ProviderOut(BaseModel):
    address: str
    endpoint: str
    region: str
    gpu_class: str
    status: Literal["active", "jailed", "unbonding", "inactive"]
    staked: Amount
    locked: Amount
    unbonding: Amount
    jailed_until: int
    jobs_done: int
    slashes: int
    slashed_total: Amount
    models: list[str]


class ModelOut(BaseModel):
    """A registered model; ``id``/``object``/``owned_by`` make the list OpenAI-compatible."""

    id: str = Field(description="the model's name, as `model` in /v1/embeddings")
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "hearth"
    model_id: str
    name: str
    runtime_hash: str
    price_per_unit: Amount
    active: bool
    providers: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class PriceOut(BaseModel):
    model_id: str
    name: str
    price_per_unit: Amount


class StatsOut(BaseModel):
    chain_id: int
    indexed_block: int | None
    chain_time: int | None
    jobs_total: int
    jobs_by_status: dict[str, int]
    jobs_per_minute: float = Field(description="jobs posted per minute over the last 10 minutes of chain time")
    providers_total: int
    providers_active: int
    active_stake: Amount
    median_latency_s: float | None = Field(description="post to delivery, over the last 200 deliveries")
    prices: list[PriceOut]


class BalanceOut(BaseModel):
    address: str
    market_balance: Amount = Field(description="credited by the market, withdrawable (pull payments)")
    market_credited: Amount
    market_withdrawn: Amount
    escrowed: Amount = Field(description="maxPayment of this client's jobs still open")
    wallet_balance: Amount | None = Field(description="payment token in the wallet (chain read)")
    allowance_market: Amount | None
    allowance_relayer: Amount | None = Field(description="what API keys of this wallet may pull")
    nonce: int | None = Field(description="the next JobRequest nonce")


# ---------------------------------------------------------------------------- auth


class SiweNonceOut(BaseModel):
    nonce: str
    domain: str
    chain_id: int
    uri: str


class SiweVerifyIn(BaseModel):
    message: Text = Field(max_length=4096)
    signature: HexBytes


class SessionOut(BaseModel):
    address: str
    token: str | None = None
    expires_at: int


class ApiKeyGrantIn(BaseModel):
    """The EIP-712 ``ApiKeyGrant`` a wallet signs to bind an API key to itself."""

    model_config = ConfigDict(populate_by_name=True)

    wallet: Address
    gateway: Address
    api_key_hash: Hash32 = Field(alias="apiKeyHash")
    spending_cap: Uint256 = Field(alias="spendingCap")
    expiry: Uint40
    nonce: Uint256


class ApiKeyCreateIn(BaseModel):
    grant: ApiKeyGrantIn
    signature: HexBytes
    region: Region | None = Field(
        default=None, description="the provider region this key prefers: routing on the serving plane uses it when "
                                  "a request sends no x-hearth-region header")


class ApiKeyOut(BaseModel):
    api_key_hash: str
    wallet: str
    gateway: str
    spending_cap: Amount
    spent: Amount
    remaining: Amount
    expiry: int
    revoked: bool
    refunds_owed: Amount = Field(description="escrow returned to the relayer for this key's jobs (refunded or unused)")
    jobs: int
    region: str | None = Field(default=None, description="the provider region this key prefers")


# ---------------------------------------------------------------------------- embeddings


class EmbeddingsIn(BaseModel):
    model: Text = Field(min_length=1, max_length=128, description="model name or 0x model id")
    input: Text | list[Text] | TokenIds | list[TokenIds] = Field(
        description="a text, a list of texts, a token id array or a list of token id arrays (the model's "
                    "WordPiece ids); texts may not be empty or only whitespace")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: Text | None = Field(default=None, max_length=256)


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class HearthJobInfo(BaseModel):
    job_id: int
    post_tx: str
    receipt_tx: str
    output_hash: str
    cost: Amount
    verified: bool


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage
    hearth: HearthJobInfo
