// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IFederation} from "./interfaces/IFederation.sol";
import {ILLMIdentity} from "./interfaces/ILLMIdentity.sol";

/// @title Federation
/// @notice The round ledger: tasks, rounds, one update commitment per LLM identity per round, and the global
/// adapter of each round with its contributors and weights.
contract Federation is AccessControl, EIP712, IFederation {
    /// @notice Role that creates tasks.
    bytes32 public constant TASK_ADMIN_ROLE = keccak256("TASK_ADMIN_ROLE");

    /// @notice EIP-712 type of a relayed update: binds task, round, the identity, the whole commitment and the
    /// time after which the signature is void.
    bytes32 public constant UPDATE_TYPEHASH = keccak256(
        "UpdateCommitment(uint256 task,uint256 round,uint256 identity,string cid,bytes32 adapterSha256,"
        "uint64 numExamples,bytes32 metricsDigest,uint64 deadline)"
    );

    /// @notice The largest minimum of contributors a task may ask for: a round's finalize lists every contributor,
    /// and 1,000 of them cost about 7.2 million gas, well inside a block.
    uint32 public constant MAX_MIN_UPDATES = 1000;

    /// @notice The most identities one secure round takes: Shamir shares over GF(2^8) number at most 255.
    uint32 public constant MAX_SECURE_PARTICIPANTS = 255;

    /// @notice The longest peer announcement: a few multiaddrs with their peer id.
    uint256 public constant MAX_PEER_ANNOUNCEMENT = 1024;

    /// @notice Aggregation weights are fixed-point numbers that add up to this.
    uint256 public constant WEIGHT_SCALE = 1e18;

    /// @inheritdoc IFederation
    ILLMIdentity public immutable identities;

    /// @dev One slot: everything submitUpdate needs to read.
    struct Schedule {
        uint32 currentRound;
        uint32 maxRounds;
        uint32 minUpdates;
        uint32 roundDuration;
        uint64 roundDeadline;
        TaskStatus status;
        uint56 maxExamples;
    }

    struct Task {
        Schedule schedule;
        address aggregator;
        uint64 maxUpdateNorm;
        /// @dev Set by the task admin; becomes the aggregator when it accepts (two-step handover).
        address pendingAggregator;
        Privacy privacy;
        uint32 threshold;
        bytes32 baseModelSha256;
        bytes32 loraConfigHash;
        bytes32 strategyId;
        /// @dev sha256 of the adapter the open round starts from; after the last round, the final global adapter.
        /// One slot per task, overwritten each round (past rounds' digests live in events and submissions).
        bytes32 headSha256;
        /// @dev keccak256 of the CID of that adapter, so that anyone closing a round must name the same CID.
        bytes32 headCidHash;
    }

    /// @dev Two slots per submission: the digest, and the rest packed.
    struct Submission {
        bytes32 adapterSha256;
        uint64 numExamples;
        uint40 submittedAt;
        bool aggregated;
        uint96 weight;
    }

    uint256 private _lastTaskId;
    mapping(uint256 task => Task) private _tasks;
    mapping(uint256 task => mapping(uint256 round => mapping(uint256 identity => Submission))) private _submissions;
    mapping(uint256 task => mapping(uint256 round => SecureRoundInfo)) private _secureRounds;
    /// @dev A DP task's settings and the epsilon spent so far (one slot).
    struct DpState {
        DpConfig config;
        uint64 spent;
    }

    mapping(uint256 task => DpState) private _dp;
    /// @dev Per identity in a secure round: bit 0 keys advertised, bit 1 shares dealt, bit 2 shares revealed.
    mapping(uint256 task => mapping(uint256 round => mapping(uint256 identity => uint8))) private _steps;

    uint8 private constant KEYS_BIT = 1;
    uint8 private constant DEALT_BIT = 2;
    uint8 private constant REVEALED_BIT = 4;

    constructor(ILLMIdentity identityRegistry, address admin) EIP712("FlowOfKnowledgeFederation", "1") {
        if (address(identityRegistry) == address(0) || admin == address(0)) revert FederationZeroAddress();
        identities = identityRegistry;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(TASK_ADMIN_ROLE, admin);
    }

    /// @inheritdoc IFederation
    function createTask(TaskConfig calldata c) external onlyRole(TASK_ADMIN_ROLE) returns (uint256 taskId) {
        taskId = _createTask(c);
    }

    /// @inheritdoc IFederation
    function createSecureTask(TaskConfig calldata c, uint32 threshold)
        external
        onlyRole(TASK_ADMIN_ROLE)
        returns (uint256 taskId)
    {
        taskId = _createSecureTask(c, threshold);
    }

    /// @inheritdoc IFederation
    function createDpTask(TaskConfig calldata c, uint32 threshold, DpConfig calldata dp)
        external
        onlyRole(TASK_ADMIN_ROLE)
        returns (uint256 taskId)
    {
        NoisePlacement want = threshold == 0 ? NoisePlacement.Central : NoisePlacement.Distributed;
        if (dp.noiseMultiplier == 0 || dp.delta == 0 || dp.delta >= 1e18 || dp.epsilonMax == 0 || dp.placement != want)
        {
            revert FederationInvalidDpConfig(dp.noiseMultiplier, dp.delta, dp.epsilonMax, dp.placement);
        }
        taskId = threshold == 0 ? _createTask(c) : _createSecureTask(c, threshold);
        _dp[taskId].config = dp;
        emit TaskDp(taskId, dp.noiseMultiplier, dp.delta, dp.epsilonMax, dp.placement);
    }

    function _createSecureTask(TaskConfig calldata c, uint32 threshold) private returns (uint256 taskId) {
        if (threshold < 2 || threshold > c.minUpdates || c.minUpdates > MAX_SECURE_PARTICIPANTS) {
            revert FederationInvalidThreshold(threshold, c.minUpdates);
        }
        taskId = _createTask(c);
        Task storage t = _tasks[taskId];
        t.privacy = Privacy.Secure;
        t.threshold = threshold;
        emit TaskPrivacy(taskId, Privacy.Secure, threshold);
    }

    /// @inheritdoc IFederation
    function dpConfig(uint256 taskId) external view returns (DpConfig memory config, uint64 epsilonSpent) {
        _requireTask(taskId);
        DpState storage d = _dp[taskId];
        return (d.config, d.spent);
    }

    /// @inheritdoc IFederation
    function advertiseKeys(uint256 taskId, uint256 round, bytes32 encryptionKey, bytes32 maskKey) external {
        if (encryptionKey == bytes32(0) || maskKey == bytes32(0)) revert FederationZeroKey();
        (uint256 id, SecureRoundInfo storage r) = _secureStep(taskId, round, SecurePhase.Keys, 0, KEYS_BIT);
        if (r.keys >= MAX_SECURE_PARTICIPANTS) {
            revert FederationTooManyParticipants(taskId, round, MAX_SECURE_PARTICIPANTS);
        }
        ++r.keys;
        emit KeysAdvertised(taskId, round, id, encryptionKey, maskKey);
    }

    /// @inheritdoc IFederation
    function dealShares(uint256 taskId, uint256 round, string calldata cid, bytes32 digest) external {
        _requireBlob(cid, digest);
        (uint256 id, SecureRoundInfo storage r) = _secureStep(taskId, round, SecurePhase.Shares, KEYS_BIT, DEALT_BIT);
        ++r.dealt;
        emit SharesDealt(taskId, round, id, cid, digest);
    }

    /// @inheritdoc IFederation
    function revealShares(uint256 taskId, uint256 round, string calldata cid, bytes32 digest) external {
        _requireBlob(cid, digest);
        (uint256 id, SecureRoundInfo storage r) = _secureStep(taskId, round, SecurePhase.Reveal, 0, REVEALED_BIT);
        if (_submissions[taskId][round][id].numExamples == 0) {
            revert FederationNotParticipant(taskId, round, id, SecurePhase.Masked);
        }
        ++r.revealed;
        emit SharesRevealed(taskId, round, id, cid, digest);
    }

    /// @inheritdoc IFederation
    function advancePhase(uint256 taskId, uint256 round) external {
        Task storage t = _requireAggregator(taskId);
        if (t.privacy != Privacy.Secure) revert FederationWrongPrivacy(taskId, t.privacy);
        Schedule memory s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        SecureRoundInfo storage r = _secureRounds[taskId][round];
        SecurePhase phase = r.phase;
        (uint256 count, uint256 required) = phase == SecurePhase.Keys
            ? (r.keys, t.threshold)
            : phase == SecurePhase.Shares ? (r.dealt, t.threshold) : (r.masked, s.minUpdates);
        if (phase == SecurePhase.Reveal) revert FederationWrongPhase(taskId, round, SecurePhase.Masked, phase);
        if (count < required) revert FederationPhaseShort(taskId, round, phase, count, required);
        r.phase = SecurePhase(uint8(phase) + 1);
        emit SecurePhaseAdvanced(taskId, round, r.phase, uint32(count));
    }

    /// @inheritdoc IFederation
    function announcePeer(string calldata multiaddrs) external {
        uint256 length = bytes(multiaddrs).length;
        if (length == 0 || length > MAX_PEER_ANNOUNCEMENT) revert FederationInvalidAnnouncement(length);
        emit PeerAnnounced(msg.sender, multiaddrs);
    }

    /// @inheritdoc IFederation
    function privacy(uint256 taskId) external view returns (Privacy mode, uint32 threshold) {
        Task storage t = _requireTask(taskId);
        return (t.privacy, t.threshold);
    }

    /// @inheritdoc IFederation
    function secureRound(uint256 taskId, uint256 round) external view returns (SecureRoundInfo memory) {
        _requireTask(taskId);
        return _secureRounds[taskId][round];
    }

    function _createTask(TaskConfig calldata c) private returns (uint256 taskId) {
        if (c.aggregator == address(0)) revert FederationZeroAddress();
        if (bytes(c.baseModelCid).length == 0) revert FederationZeroCid();
        if (c.baseModelSha256 == bytes32(0)) revert FederationZeroDigest();
        if (
            c.minUpdates == 0 || c.minUpdates > MAX_MIN_UPDATES || c.roundDuration == 0
                || c.roundDuration > type(uint32).max || c.maxRounds == 0 || c.maxExamples == 0
                || c.maxExamples > type(uint56).max || c.maxUpdateNorm == 0
        ) {
            revert FederationInvalidTaskConfig(
                c.minUpdates, c.roundDuration, c.maxRounds, c.maxExamples, c.maxUpdateNorm
            );
        }
        taskId = ++_lastTaskId;
        Task storage t = _tasks[taskId];
        t.schedule = Schedule({
            currentRound: 0,
            maxRounds: c.maxRounds,
            minUpdates: c.minUpdates,
            roundDuration: uint32(c.roundDuration),
            roundDeadline: 0,
            status: TaskStatus.None,
            maxExamples: uint56(c.maxExamples)
        });
        t.aggregator = c.aggregator;
        t.maxUpdateNorm = c.maxUpdateNorm;
        t.baseModelSha256 = c.baseModelSha256;
        t.loraConfigHash = c.loraConfigHash;
        t.strategyId = c.strategyId;
        emit TaskCreated(
            taskId,
            c.aggregator,
            c.strategyId,
            c.baseModelCid,
            c.baseModelSha256,
            c.loraConfigHash,
            c.minUpdates,
            c.roundDuration,
            c.maxRounds,
            c.maxExamples,
            c.maxUpdateNorm
        );
    }

    /// @inheritdoc IFederation
    function proposeAggregator(uint256 taskId, address proposed) external onlyRole(TASK_ADMIN_ROLE) {
        Task storage t = _requireTask(taskId);
        t.pendingAggregator = proposed;
        emit AggregatorProposed(taskId, t.aggregator, proposed);
    }

    /// @inheritdoc IFederation
    function acceptAggregator(uint256 taskId) external {
        Task storage t = _requireTask(taskId);
        if (msg.sender != t.pendingAggregator || msg.sender == address(0)) {
            revert FederationNotPendingAggregator(taskId, msg.sender);
        }
        address previous = t.aggregator;
        t.aggregator = msg.sender;
        t.pendingAggregator = address(0);
        emit AggregatorChanged(taskId, previous, msg.sender);
    }

    /// @inheritdoc IFederation
    function openFirstRound(uint256 taskId, string calldata startCid, bytes32 startSha256) external {
        Task storage t = _requireAggregator(taskId);
        if (t.schedule.currentRound != 0) revert FederationAlreadyStarted(taskId);
        if (bytes(startCid).length == 0) revert FederationZeroCid();
        if (startSha256 == bytes32(0)) revert FederationZeroDigest();
        t.headSha256 = startSha256;
        t.headCidHash = keccak256(bytes(startCid));
        _openRound(taskId, t, 1, startCid, startSha256);
    }

    /// @inheritdoc IFederation
    function submitUpdate(
        uint256 taskId,
        uint256 round,
        string calldata cid,
        bytes32 adapterSha256,
        uint64 numExamples,
        bytes32 metricsDigest
    ) external {
        _submit(taskId, round, cid, adapterSha256, numExamples, metricsDigest, msg.sender, address(0));
    }

    /// @inheritdoc IFederation
    function submitUpdateWithSignature(
        uint256 taskId,
        uint256 round,
        uint256 identity,
        string calldata cid,
        bytes32 adapterSha256,
        uint64 numExamples,
        bytes32 metricsDigest,
        uint64 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert FederationSignatureExpired(deadline);
        bytes32 structHash = keccak256(
            abi.encode(
                UPDATE_TYPEHASH,
                taskId,
                round,
                identity,
                keccak256(bytes(cid)),
                adapterSha256,
                numExamples,
                metricsDigest,
                deadline
            )
        );
        address signer = ECDSA.recover(_hashTypedDataV4(structHash), signature);
        uint256 id = _submit(taskId, round, cid, adapterSha256, numExamples, metricsDigest, signer, msg.sender);
        if (id != identity) revert FederationWrongIdentity(signer, id, identity);
    }

    /// @inheritdoc IFederation
    function finalizeRound(
        uint256 taskId,
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        uint256[] calldata contributors,
        uint96[] calldata weights,
        bytes32 strategyId
    ) external {
        if (_dp[taskId].config.placement != NoisePlacement.None) revert FederationDpMismatch(taskId, true);
        _finalize(taskId, round, globalCid, globalSha256, contributors, weights, strategyId);
    }

    /// @inheritdoc IFederation
    function finalizeDpRound(
        uint256 taskId,
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        uint256[] calldata contributors,
        uint96[] calldata weights,
        bytes32 strategyId,
        uint64 epsilonSpent
    ) external {
        DpState storage d = _dp[taskId];
        if (d.config.placement == NoisePlacement.None) revert FederationDpMismatch(taskId, false);
        if (epsilonSpent < d.spent || epsilonSpent > d.config.epsilonMax) {
            revert FederationBudgetExceeded(taskId, round, epsilonSpent, d.spent, d.config.epsilonMax);
        }
        uint256 n = weights.length;
        uint256 low = n == 0 ? 0 : WEIGHT_SCALE / n;
        for (uint256 i; i < n; ++i) {
            // the rounding remainder (below n units of 1e-18) may sit on any weight
            if (weights[i] < low || weights[i] - low >= n) revert FederationWeightsNotUniform(i, weights[i]);
        }
        d.spent = epsilonSpent;
        _finalize(taskId, round, globalCid, globalSha256, contributors, weights, strategyId);
    }

    function _finalize(
        uint256 taskId,
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        uint256[] calldata contributors,
        uint96[] calldata weights,
        bytes32 strategyId
    ) private {
        Task storage t = _requireAggregator(taskId);
        Schedule memory s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        if (strategyId != t.strategyId) revert FederationWrongStrategy(taskId, t.strategyId, strategyId);
        if (bytes(globalCid).length == 0) revert FederationZeroCid();
        if (globalSha256 == bytes32(0)) revert FederationZeroDigest();
        uint256 n = contributors.length;
        if (n != weights.length) revert FederationLengthMismatch(n, weights.length);
        if (t.privacy == Privacy.Secure) _requireUnmaskable(taskId, round, t.threshold, n);
        if (n < s.minUpdates) revert FederationTooFewUpdates(taskId, round, n, s.minUpdates);

        // a contributor with weight zero contributes nothing: it does not count towards the minimum
        uint256 counted = _markContributors(taskId, round, contributors, weights);
        if (counted < s.minUpdates) revert FederationTooFewUpdates(taskId, round, counted, s.minUpdates);

        t.headSha256 = globalSha256;
        emit RoundFinalized(taskId, round, strategyId, globalCid, globalSha256, contributors, weights);
        DpState storage d = _dp[taskId];
        if (d.config.placement != NoisePlacement.None) emit PrivacySpent(taskId, round, d.spent);
        _advance(taskId, t, round, s.maxRounds, globalCid, globalSha256);
    }

    /// @inheritdoc IFederation
    function declareUnavailable(uint256 taskId, uint256 round, uint256[] calldata identitiesList) external {
        Task storage t = _requireAggregator(taskId);
        if (t.privacy != Privacy.Open) revert FederationWrongPrivacy(taskId, t.privacy);
        Schedule memory s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        mapping(uint256 => Submission) storage subs = _submissions[taskId][round];
        for (uint256 i; i < identitiesList.length; ++i) {
            uint256 id = identitiesList[i];
            if (subs[id].numExamples == 0) revert FederationNotSubmitter(taskId, round, id);
        }
        emit UpdatesUnavailable(taskId, round, identitiesList);
    }

    /// @inheritdoc IFederation
    function closeRound(uint256 taskId, uint256 round, string calldata startCid) external {
        Task storage t = _requireTask(taskId);
        Schedule memory s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        uint256 allowedFrom = msg.sender == t.aggregator ? s.roundDeadline : uint256(s.roundDeadline) + s.roundDuration;
        if (block.timestamp <= allowedFrom) revert FederationTooEarlyToClose(taskId, round, msg.sender, allowedFrom);
        if (keccak256(bytes(startCid)) != t.headCidHash) revert FederationWrongStartCid(taskId, round);
        emit RoundClosed(taskId, round, msg.sender);
        _advance(taskId, t, round, s.maxRounds, startCid, t.headSha256);
    }

    /// @inheritdoc IFederation
    function task(uint256 taskId) external view returns (TaskInfo memory) {
        Task storage t = _requireTask(taskId);
        Schedule memory s = t.schedule;
        return TaskInfo({
            aggregator: t.aggregator,
            pendingAggregator: t.pendingAggregator,
            minUpdates: s.minUpdates,
            maxRounds: s.maxRounds,
            currentRound: s.currentRound,
            roundDuration: s.roundDuration,
            maxExamples: s.maxExamples,
            maxUpdateNorm: t.maxUpdateNorm,
            roundDeadline: s.roundDeadline,
            status: s.status,
            baseModelSha256: t.baseModelSha256,
            loraConfigHash: t.loraConfigHash,
            strategyId: t.strategyId,
            headSha256: t.headSha256
        });
    }

    /// @inheritdoc IFederation
    function submission(uint256 taskId, uint256 round, uint256 identity)
        external
        view
        returns (SubmissionInfo memory)
    {
        Submission storage sub = _submissions[taskId][round][identity];
        return SubmissionInfo({
            adapterSha256: sub.adapterSha256,
            numExamples: sub.numExamples,
            submittedAt: sub.submittedAt,
            aggregated: sub.aggregated,
            weight: sub.weight
        });
    }

    /// @inheritdoc IFederation
    function totalTasks() external view returns (uint256) {
        return _lastTaskId;
    }

    /// @inheritdoc IFederation
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _submit(
        uint256 taskId,
        uint256 round,
        string calldata cid,
        bytes32 adapterSha256,
        uint64 numExamples,
        bytes32 metricsDigest,
        address signer,
        address relayer
    ) private returns (uint256 id) {
        Task storage t = _requireTask(taskId);
        Schedule storage s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        uint64 deadline = s.roundDeadline;
        if (block.timestamp > deadline) revert FederationDeadlinePassed(taskId, round, deadline);
        if (bytes(cid).length == 0) revert FederationZeroCid();
        if (adapterSha256 == bytes32(0)) revert FederationZeroDigest();
        if (numExamples == 0) revert FederationZeroExamples();

        ILLMIdentity.Status status;
        (id, status) = identities.identityOfSigner(signer);
        if (id == 0 || status != ILLMIdentity.Status.Active) {
            revert FederationIdentityNotActive(signer, id, uint8(status));
        }
        if (numExamples > s.maxExamples) revert FederationTooManyExamples(taskId, id, numExamples, s.maxExamples);
        Submission storage sub = _submissions[taskId][round][id];
        if (sub.numExamples != 0) revert FederationAlreadySubmitted(taskId, round, id);
        if (t.privacy == Privacy.Secure) {
            // only a participant (its shares dealt) submits, and only in the masked phase
            SecureRoundInfo storage r = _secureRounds[taskId][round];
            if (r.phase != SecurePhase.Masked) revert FederationWrongPhase(taskId, round, SecurePhase.Masked, r.phase);
            if (_steps[taskId][round][id] & DEALT_BIT == 0) {
                revert FederationNotParticipant(taskId, round, id, SecurePhase.Shares);
            }
            ++r.masked;
        }
        sub.adapterSha256 = adapterSha256;
        sub.numExamples = numExamples;
        sub.submittedAt = uint40(block.timestamp);
        emit UpdateSubmitted(taskId, round, id, signer, relayer, cid, adapterSha256, numExamples, metricsDigest);
    }

    /// @dev Marks each listed contributor's submission as aggregated with its weight; checks order, submission
    /// and that the weights add up to WEIGHT_SCALE. Returns how many have a non-zero weight.
    function _markContributors(
        uint256 taskId,
        uint256 round,
        uint256[] calldata contributors,
        uint96[] calldata weights
    ) private returns (uint256 nonZero) {
        mapping(uint256 => Submission) storage subs = _submissions[taskId][round];
        uint256 sum;
        uint256 previous;
        for (uint256 i; i < contributors.length; ++i) {
            uint256 id = contributors[i];
            if (id <= previous) revert FederationContributorsNotSorted(i, id);
            previous = id;
            Submission storage sub = subs[id];
            if (sub.numExamples == 0) revert FederationNotSubmitter(taskId, round, id);
            sub.aggregated = true;
            sub.weight = weights[i];
            sum += weights[i];
            if (weights[i] != 0) ++nonZero;
        }
        if (sum != WEIGHT_SCALE) revert FederationWeightsSum(sum);
    }

    /// @dev One step of a secure round by the caller's Active identity: the task secure, the round open in `phase`
    /// (before its deadline, but for reveals), the identity done with `needs` and not yet with `marks`.
    function _secureStep(uint256 taskId, uint256 round, SecurePhase phase, uint8 needs, uint8 marks)
        private
        returns (uint256 id, SecureRoundInfo storage r)
    {
        Task storage t = _requireTask(taskId);
        if (t.privacy != Privacy.Secure) revert FederationWrongPrivacy(taskId, t.privacy);
        Schedule memory s = t.schedule;
        if (s.status != TaskStatus.Open || s.currentRound != round) revert FederationRoundNotOpen(taskId, round);
        r = _secureRounds[taskId][round];
        if (r.phase != phase) revert FederationWrongPhase(taskId, round, phase, r.phase);
        if (phase != SecurePhase.Reveal && block.timestamp > s.roundDeadline) {
            revert FederationDeadlinePassed(taskId, round, s.roundDeadline);
        }
        ILLMIdentity.Status status;
        (id, status) = identities.identityOfSigner(msg.sender);
        if (id == 0 || status != ILLMIdentity.Status.Active) {
            revert FederationIdentityNotActive(msg.sender, id, uint8(status));
        }
        uint8 steps = _steps[taskId][round][id];
        if (steps & marks != 0) revert FederationAlreadyDone(taskId, round, id, phase);
        if (steps & needs != needs) revert FederationNotParticipant(taskId, round, id, SecurePhase(uint8(phase) - 1));
        _steps[taskId][round][id] = steps | marks;
    }

    /// @dev A secure round may be finalized in phase Reveal, with `threshold` reveals, over exactly its survivors
    /// (`n` contributors, each of which submitted: _markContributors checks that).
    function _requireUnmaskable(uint256 taskId, uint256 round, uint32 threshold, uint256 n) private view {
        SecureRoundInfo storage r = _secureRounds[taskId][round];
        if (r.phase != SecurePhase.Reveal) revert FederationWrongPhase(taskId, round, SecurePhase.Reveal, r.phase);
        if (r.revealed < threshold) {
            revert FederationPhaseShort(taskId, round, SecurePhase.Reveal, r.revealed, threshold);
        }
        if (n != r.masked) revert FederationNotSurvivors(taskId, round, n, r.masked);
    }

    function _requireBlob(string calldata cid, bytes32 digest) private pure {
        if (bytes(cid).length == 0) revert FederationZeroCid();
        if (digest == bytes32(0)) revert FederationZeroDigest();
    }

    /// @dev After round `round` ends (finalized or closed), completes the task or opens the next round from
    /// `cid` / `sha`.
    function _advance(
        uint256 taskId,
        Task storage t,
        uint256 round,
        uint32 maxRounds,
        string calldata cid,
        bytes32 sha
    ) private {
        if (round == maxRounds) {
            t.schedule.status = TaskStatus.Completed;
            emit TaskCompleted(taskId, round, cid, sha);
        } else {
            t.headCidHash = keccak256(bytes(cid));
            _openRound(taskId, t, uint32(round + 1), cid, sha);
        }
    }

    function _openRound(uint256 taskId, Task storage t, uint32 round, string calldata startCid, bytes32 startSha256)
        private
    {
        uint64 deadline = uint64(block.timestamp) + t.schedule.roundDuration;
        t.schedule.currentRound = round;
        t.schedule.roundDeadline = deadline;
        t.schedule.status = TaskStatus.Open;
        emit RoundOpened(taskId, round, startCid, startSha256, deadline);
    }

    function _requireTask(uint256 taskId) private view returns (Task storage t) {
        t = _tasks[taskId];
        if (t.schedule.maxRounds == 0) revert FederationUnknownTask(taskId); // every task has maxRounds >= 1
    }

    function _requireAggregator(uint256 taskId) private view returns (Task storage t) {
        t = _requireTask(taskId);
        if (msg.sender != t.aggregator) revert FederationNotAggregator(taskId, msg.sender);
    }
}
