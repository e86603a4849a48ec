// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IJobMarket} from "./interfaces/IJobMarket.sol";
import {IStaking} from "./interfaces/IStaking.sol";

/// @title DisputeGame
/// @notice The dispute game shared by every settlement path: per-job receipts (`JobMarket`)
/// and single leaves of a Merkle-committed batch (`BatchSettlement`). A caller keeps one
/// `Dispute` per disputed receipt (keyed by any id it never reuses) and calls, in order: `open`
/// with its committee terms (the challenge; `openWithParams` reads them from the market's
/// parameters), `draw` (anyone, from a block hash fixed after the challenge), `commit` and
/// `reveal` (committee members), `resolve` (anyone) or `decide` (governance, escalated only),
/// then settles its own escrow and calls `settle` for the bond, the slash shares and the
/// committee's rewards and penalties.
/// @dev An external library: its code is deployed once and runs by DELEGATECALL in the
/// caller's storage and context (events come from the caller, staking sees the caller as
/// `msg.sender`, so `Staking` must let every caller lock, unlock and slash). Events and errors
/// are those of `IJobMarket`.
library DisputeGame {
    /// @notice Blocks between a challenge and the block whose hash seeds its draw.
    uint256 internal constant DRAW_DELAY = 2;
    /// @notice Blocks after drawBlock during which its hash is readable (EVM `BLOCKHASH`).
    uint256 internal constant DRAW_HORIZON = 256;
    /// @notice Fewest distinct eligible providers besides the two parties for a committee to be
    /// drawn; with fewer, the dispute settles neutrally (see `resolve`). Two, so that the devnet's
    /// four providers can always seat a committee; seats are stake-weighted, so a larger set
    /// protects by stake, not by head count.
    uint256 internal constant MIN_ELIGIBLE = 2;
    uint256 private constant BPS = 10_000;

    /// @notice The committee terms of a dispute, fixed when it opens.
    struct Terms {
        uint8 committeeSize;
        uint32 commitPeriod;
        uint32 revealPeriod;
        uint32 escalationPeriod;
        uint64 bond;
        uint96 memberBond;
        uint16 memberPenaltyBps;
        uint16 challengerRewardBps;
        uint16 committeeRewardBps;
        uint96 maxChallengerReward;
    }

    struct Member {
        uint8 seats;
        bool committed;
        bool revealed;
        bool agreed;
        uint96 bondLocked;
        bytes32 commitment;
    }

    struct Dispute {
        address challenger;
        IJobMarket.Phase phase;
        uint40 drawBlock;
        uint40 challengedAt;
        address provider;
        uint40 commitEnd;
        uint40 revealEnd;
        uint8 agreeSeats;
        uint8 disagreeSeats;
        uint40 escalationEnd;
        uint64 units;
        bytes32 modelId;
        bytes32 gpuClass;
        bytes32 outputHash;
        Terms terms;
        address[] seats;
        address[] members;
        mapping(address account => Member) member;
    }

    /// @notice What a dispute is about: the receipt's parties and claims.
    struct Claim {
        address provider;
        address challenger;
        bytes32 modelId;
        bytes32 gpuClass;
        bytes32 outputHash;
        uint64 units;
    }

    /// @notice Records a challenge under the caller's committee terms `t` (fixed for the
    /// dispute's life); the draw block is `DRAW_DELAY` blocks ahead. Returns the bond the caller
    /// must collect.
    function open(Dispute storage d, uint256 id, Claim calldata c, Terms calldata t) external returns (uint256) {
        return _open(d, id, c, t);
    }

    /// @notice `open` under the market's current parameters (read here from the market's storage,
    /// which keeps the market's bytecode and gas as they were).
    function openWithParams(Dispute storage d, uint256 id, Claim calldata c, IJobMarket.Params storage p)
        external
        returns (uint256)
    {
        return _open(
            d,
            id,
            c,
            Terms(
                p.committeeSize,
                p.commitPeriod,
                p.revealPeriod,
                p.escalationPeriod,
                p.challengeBond,
                p.memberBond,
                p.memberPenaltyBps,
                p.challengerRewardBps,
                p.committeeRewardBps,
                p.maxChallengerReward
            )
        );
    }

    function _open(Dispute storage d, uint256 id, Claim calldata c, Terms memory t) private returns (uint256 bond) {
        require(d.phase == IJobMarket.Phase.None, IJobMarket.WrongPhase(id, d.phase));
        bond = t.bond;
        d.challenger = c.challenger;
        d.provider = c.provider;
        d.phase = IJobMarket.Phase.AwaitingDraw;
        uint40 drawBlock = uint40(block.number + DRAW_DELAY);
        d.drawBlock = drawBlock;
        d.challengedAt = uint40(block.timestamp);
        d.modelId = c.modelId;
        d.gpuClass = c.gpuClass;
        d.outputHash = c.outputHash;
        d.units = c.units;
        d.terms = t;
        emit IJobMarket.JobChallenged(id, c.challenger, t.bond, drawBlock);
    }

    /// @notice Draws the committee (see `IJobMarket.drawCommittee`).
    function draw(Dispute storage d, uint256 id, IStaking staking) external {
        require(d.phase == IJobMarket.Phase.AwaitingDraw, IJobMarket.WrongPhase(id, d.phase));
        uint256 drawBlock = d.drawBlock;
        require(block.number > drawBlock, IJobMarket.DrawNotReady(id, drawBlock));
        require(block.number <= drawBlock + DRAW_HORIZON, IJobMarket.DrawExpired(id, drawBlock));
        uint256 seed = uint256(keccak256(abi.encode(blockhash(drawBlock), id)));
        Terms storage t = d.terms;
        address[] memory seats = staking.drawCommittee(
            d.modelId, d.gpuClass, seed, t.committeeSize, MIN_ELIGIBLE, d.provider, d.challenger
        );
        if (seats.length == 0) {
            d.phase = IJobMarket.Phase.NoCommittee;
            emit IJobMarket.CommitteeDrawn(id, seats, 0, 0);
            return;
        }
        for (uint256 i; i < seats.length; ++i) {
            Member storage m = d.member[seats[i]];
            if (m.seats == 0) d.members.push(seats[i]);
            ++m.seats;
        }
        d.seats = seats;
        uint40 commitEnd = uint40(block.timestamp + t.commitPeriod);
        uint40 revealEnd = commitEnd + t.revealPeriod;
        d.commitEnd = commitEnd;
        d.revealEnd = revealEnd;
        d.phase = IJobMarket.Phase.Voting;
        emit IJobMarket.CommitteeDrawn(id, seats, commitEnd, revealEnd);
    }

    /// @notice Commits `voter`'s vote and locks its bond.
    function commit(Dispute storage d, uint256 id, IStaking staking, address voter, bytes32 commitment) external {
        require(d.phase == IJobMarket.Phase.Voting, IJobMarket.WrongPhase(id, d.phase));
        Member storage m = d.member[voter];
        require(m.seats != 0, IJobMarket.NotCommitteeMember(id, voter));
        require(block.timestamp < d.commitEnd, IJobMarket.CommitPhaseOver(id, d.commitEnd));
        require(!m.committed, IJobMarket.AlreadyCommitted(id, voter));
        uint96 bond = uint96(uint256(d.terms.memberBond) * m.seats);
        m.committed = true;
        m.commitment = commitment;
        m.bondLocked = bond;
        emit IJobMarket.VoteCommitted(id, voter, commitment, bond);
        if (bond != 0) staking.lockBond(voter, bond);
    }

    /// @notice Reveals `voter`'s vote on (outputHash, units).
    function reveal(Dispute storage d, uint256 id, address voter, bytes32 outputHash, uint64 units, bytes32 salt)
        external
    {
        require(d.phase == IJobMarket.Phase.Voting, IJobMarket.WrongPhase(id, d.phase));
        Member storage m = d.member[voter];
        require(m.seats != 0, IJobMarket.NotCommitteeMember(id, voter));
        require(
            block.timestamp >= d.commitEnd && block.timestamp < d.revealEnd,
            IJobMarket.RevealPhaseNotOpen(id, d.commitEnd, d.revealEnd)
        );
        require(!m.revealed, IJobMarket.AlreadyRevealed(id, voter));
        require(
            m.committed && keccak256(abi.encode(id, voter, outputHash, units, salt)) == m.commitment,
            IJobMarket.RevealDoesNotMatchCommit(id, voter)
        );
        m.revealed = true;
        // Cannot overflow: at most MAX_COMMITTEE seats in all.
        unchecked {
            if (outputHash == d.outputHash && units == d.units) {
                m.agreed = true;
                d.agreeSeats += m.seats;
            } else {
                d.disagreeSeats += m.seats;
            }
        }
        emit IJobMarket.VoteRevealed(id, voter, outputHash, units);
    }

    /// @notice Ends the dispute when it can end (see `IJobMarket.resolveDispute`); returns the
    /// outcome, `Escalated` when governance now has until `escalationEnd`.
    function resolve(Dispute storage d, uint256 id) external returns (IJobMarket.Outcome) {
        IJobMarket.Phase phase = d.phase;
        if (phase == IJobMarket.Phase.AwaitingDraw) {
            uint256 last = uint256(d.drawBlock) + DRAW_HORIZON;
            require(block.number > last, IJobMarket.DisputeStillOpen(id, last));
            d.phase = IJobMarket.Phase.Settled;
            return IJobMarket.Outcome.Neutral;
        }
        if (phase == IJobMarket.Phase.NoCommittee) {
            d.phase = IJobMarket.Phase.Settled;
            return IJobMarket.Outcome.Neutral;
        }
        if (phase == IJobMarket.Phase.Voting) {
            require(block.timestamp >= d.revealEnd, IJobMarket.DisputeStillOpen(id, d.revealEnd));
            uint256 agree = d.agreeSeats;
            uint256 disagree = d.disagreeSeats;
            uint256 quorum = d.terms.committeeSize / 2 + 1;
            if (agree + disagree >= quorum && agree != disagree) {
                d.phase = IJobMarket.Phase.Settled;
                return agree > disagree ? IJobMarket.Outcome.ProviderWon : IJobMarket.Outcome.ProviderLost;
            }
            d.phase = IJobMarket.Phase.Escalated;
            d.escalationEnd = uint40(block.timestamp + d.terms.escalationPeriod);
            return IJobMarket.Outcome.Escalated;
        }
        require(phase == IJobMarket.Phase.Escalated, IJobMarket.WrongPhase(id, phase));
        require(block.timestamp >= d.escalationEnd, IJobMarket.DisputeStillOpen(id, d.escalationEnd));
        d.phase = IJobMarket.Phase.Settled;
        return IJobMarket.Outcome.Neutral;
    }

    /// @notice Governance's decision of an escalated dispute, before its escalation deadline.
    function decide(Dispute storage d, uint256 id, bool providerWon) external returns (IJobMarket.Outcome) {
        require(d.phase == IJobMarket.Phase.Escalated, IJobMarket.DisputeNotEscalated(id));
        require(block.timestamp < d.escalationEnd, IJobMarket.EscalationClosed(id, d.escalationEnd));
        d.phase = IJobMarket.Phase.Settled;
        return providerWon ? IJobMarket.Outcome.ProviderWon : IJobMarket.Outcome.ProviderLost;
    }

    /// @dev Running totals of `settle` (a struct keeps the stack shallow).
    struct Pots {
        bool decided;
        bool providerWon;
        uint256 usdPot;
        uint256 stakePot;
        uint256 penalties;
        uint256 majoritySeats;
        uint256 paidUsd;
        uint256 paidStake;
        uint256 challengerReward;
    }

    /// @notice Settles the dispute's money once the caller has settled its escrow. For
    /// ProviderLost it unlocks `collateral` (locked by the provider for this receipt, 0 when
    /// none is), slashes `penalty` to the caller and jails the provider; for Neutral it unlocks
    /// `collateral`; for ProviderWon the caller passes 0 and keeps the collateral locked until
    /// it finalizes. Then the challenger's
    /// bond, the shares of the slash, and each member's bond, penalty and reward. Credits go to
    /// the `usd` (payment token) and `stake` (staking token) ledgers; the treasury gets the rest.
    /// @return slashed staking-token wei actually slashed from the provider
    function settle(
        Dispute storage d,
        uint256 id,
        IStaking staking,
        IJobMarket.Outcome outcome,
        uint256 collateral,
        uint256 penalty,
        address treasury,
        mapping(address => uint256) storage usd,
        mapping(address => uint256) storage stake
    ) external returns (uint256 slashed) {
        if (outcome == IJobMarket.Outcome.ProviderLost) {
            slashed = staking.slash(d.provider, collateral, penalty, address(this), true);
        } else if (collateral != 0) {
            staking.unlockCollateral(d.provider, collateral);
        }
        Pots memory pots;
        pots.providerWon = outcome == IJobMarket.Outcome.ProviderWon;
        pots.decided = pots.providerWon || outcome == IJobMarket.Outcome.ProviderLost;
        _settleParties(d, id, outcome, slashed, pots, usd, stake);
        _settleMembers(d, id, staking, pots);
        pots.stakePot += pots.penalties;
        _payMajority(d, id, pots, usd, stake);
        uint256 treasuryStake = slashed + pots.penalties - pots.challengerReward - pots.paidStake;
        _credit(usd, treasury, pots.usdPot - pots.paidUsd, id, false);
        _credit(stake, treasury, treasuryStake, id, true);
        emit IJobMarket.DisputeSettled(id, pots.challengerReward, pots.paidUsd, pots.paidStake, treasuryStake);
    }

    function _settleParties(
        Dispute storage d,
        uint256 id,
        IJobMarket.Outcome outcome,
        uint256 slashed,
        Pots memory pots,
        mapping(address => uint256) storage usd,
        mapping(address => uint256) storage stake
    ) private {
        Terms storage t = d.terms;
        uint256 bond = t.bond;
        if (outcome == IJobMarket.Outcome.ProviderLost) {
            uint256 reward = slashed * t.challengerRewardBps / BPS;
            if (reward > t.maxChallengerReward) reward = t.maxChallengerReward;
            pots.challengerReward = reward;
            pots.stakePot = slashed * t.committeeRewardBps / BPS;
            _credit(usd, d.challenger, bond, id, false);
            _credit(stake, d.challenger, reward, id, true);
        } else if (pots.providerWon) {
            pots.usdPot = bond * t.committeeRewardBps / BPS;
            _credit(usd, d.provider, bond - pots.usdPot, id, false);
        } else {
            _credit(usd, d.challenger, bond, id, false);
        }
    }

    /// @dev Unlocks every member's bond, slashes the penalties into the pot, counts the
    /// majority's seats. Without a decision, revealing is enough to escape the penalty.
    function _settleMembers(Dispute storage d, uint256 id, IStaking staking, Pots memory pots) private {
        address[] storage members = d.members;
        uint256 n = members.length;
        uint256 penaltyPerSeat = uint256(d.terms.memberBond) * d.terms.memberPenaltyBps / BPS;
        for (uint256 i; i < n; ++i) {
            address a = members[i];
            Member storage m = d.member[a];
            bool good = pots.decided ? (m.revealed && m.agreed == pots.providerWon) : m.revealed;
            uint256 penalty = good ? 0 : penaltyPerSeat * m.seats;
            if (penalty != 0) {
                uint256 got = staking.slash(a, m.bondLocked, penalty, address(this), false);
                pots.penalties += got;
                emit IJobMarket.MemberSettled(id, a, m.seats, 0, 0, got);
            } else {
                if (m.bondLocked != 0) staking.unlockCollateral(a, m.bondLocked);
                if (pots.decided) pots.majoritySeats += m.seats;
                else emit IJobMarket.MemberSettled(id, a, m.seats, 0, 0, 0);
            }
        }
    }

    /// @dev The majority's shares, by seats; rounding dust, and everything when there is no
    /// majority, is left for the treasury.
    function _payMajority(
        Dispute storage d,
        uint256 id,
        Pots memory pots,
        mapping(address => uint256) storage usd,
        mapping(address => uint256) storage stake
    ) private {
        if (pots.majoritySeats == 0) return;
        address[] storage members = d.members;
        uint256 n = members.length;
        for (uint256 i; i < n; ++i) {
            address a = members[i];
            Member storage m = d.member[a];
            if (!(m.revealed && m.agreed == pots.providerWon)) continue;
            uint256 u = pots.usdPot * m.seats / pots.majoritySeats;
            uint256 s = pots.stakePot * m.seats / pots.majoritySeats;
            pots.paidUsd += u;
            pots.paidStake += s;
            _credit(usd, a, u, id, false);
            _credit(stake, a, s, id, true);
            emit IJobMarket.MemberSettled(id, a, m.seats, u, s, 0);
        }
    }

    /// @notice The dispute as `IJobMarket.dispute` returns it.
    function view_(Dispute storage d) external view returns (IJobMarket.DisputeView memory v) {
        v.challenger = d.challenger;
        v.provider = d.provider;
        v.phase = d.phase;
        v.bond = d.terms.bond;
        v.drawBlock = d.drawBlock;
        v.challengedAt = d.challengedAt;
        v.commitEnd = d.commitEnd;
        v.revealEnd = d.revealEnd;
        v.escalationEnd = d.escalationEnd;
        v.seats = uint8(d.seats.length);
        v.agreeSeats = d.agreeSeats;
        v.disagreeSeats = d.disagreeSeats;
        v.modelId = d.modelId;
        v.gpuClass = d.gpuClass;
        v.outputHash = d.outputHash;
        v.units = d.units;
    }

    /// @notice A member's state as `IJobMarket.member` returns it.
    function memberView(Dispute storage d, address account) external view returns (IJobMarket.MemberView memory) {
        Member storage m = d.member[account];
        return IJobMarket.MemberView(m.seats, m.committed, m.revealed, m.agreed, m.bondLocked);
    }

    function _credit(mapping(address => uint256) storage book, address to, uint256 amount, uint256 id, bool stake)
        private
    {
        if (amount == 0) return;
        book[to] += amount;
        if (stake) emit IJobMarket.RewardCredited(to, amount, id);
        else emit IJobMarket.BalanceCredited(to, amount, id);
    }
}
