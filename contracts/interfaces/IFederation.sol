// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ILLMIdentity} from "./ILLMIdentity.sol";

/// @title The round ledger of federated LoRA training
/// @notice Tasks, rounds, one update commitment per identity per round, and each round's global adapter.
/// Storage keeps digests and counters; CIDs, contributor lists and weights live in events, so the whole
/// history can be rebuilt from logs alone.
interface IFederation {
    /// @notice Where a task stands.
    enum TaskStatus {
        None, // task unknown or no round opened yet
        Open, // the current round takes submissions until its deadline
        Completed // max rounds finalized; nothing more happens
    }

    /// @notice How a task's updates travel: in the clear (`Open`), or masked so that only their weighted sum can be
    /// recovered (`Secure`: secure aggregation with keys, encrypted shares and reveals committed on-chain).
    enum Privacy {
        Open,
        Secure
    }

    /// @notice The steps of a secure round, in order: per-round keys are advertised, Shamir shares of each
    /// participant's mask secrets are dealt (encrypted, pinned, digest committed), masked updates are submitted,
    /// then survivors reveal the shares the unmasking needs.
    enum SecurePhase {
        Keys,
        Shares,
        Masked,
        Reveal
    }

    /// @notice Where a differentially private task's Gaussian noise is added: by the aggregator to the sum of the
    /// clipped updates (`Central`, open tasks only), or by each client to its own update, its share calibrated so
    /// that the sum over the task's minimum of contributors carries the whole noise (`Distributed`, secure tasks).
    enum NoisePlacement {
        None,
        Central,
        Distributed
    }

    /// @notice A task's client-level differential privacy, fixed at creation. The clipping norm is the task's
    /// `maxUpdateNorm`; averaging is uniform over the round's contributors.
    struct DpConfig {
        uint64 noiseMultiplier; // sigma: the noise on the sum has standard deviation sigma x clip, in 1e-6 units
        uint64 delta; // in 1e-18 units (0 < delta < 1)
        uint64 epsilonMax; // the budget no finalized round may exceed, in 1e-6 units
        NoisePlacement placement;
    }

    /// @notice A secure round's phase and how many identities did each step.
    struct SecureRoundInfo {
        SecurePhase phase;
        uint32 keys; // identities that advertised keys
        uint32 dealt; // identities that committed their shares (the participants: every mask is agreed among them)
        uint32 masked; // participants that submitted a masked update (the survivors)
        uint32 revealed; // survivors that revealed their shares
    }

    /// @notice What a task is created with.
    struct TaskConfig {
        string baseModelCid;
        bytes32 baseModelSha256;
        bytes32 loraConfigHash;
        address aggregator;
        bytes32 strategyId;
        uint32 minUpdates; // contributors a round needs (1 to MAX_MIN_UPDATES)
        uint64 roundDuration; // seconds a round takes submissions (below 2^32)
        uint32 maxRounds;
        uint64 maxExamples; // the most examples one identity may claim in one round (bounds its FedAvg weight)
        uint64 maxUpdateNorm; // the largest L2 norm of an update's change from the round's start, in 1e-6 units
    }

    /// @notice A training task. `currentRound` is 0 until the first round opens.
    struct TaskInfo {
        address aggregator;
        address pendingAggregator; // proposed by a task admin; zero when no handover is pending
        uint32 minUpdates;
        uint32 maxRounds;
        uint32 currentRound;
        uint64 roundDuration; // seconds
        uint64 maxExamples; // the most examples one identity may claim in one round (bounds its FedAvg weight)
        uint64 maxUpdateNorm; // in 1e-6 units; off-chain rule: the aggregator excludes larger updates, verify checks
        uint64 roundDeadline; // unix time after which the current round takes no submissions
        TaskStatus status;
        bytes32 baseModelSha256;
        bytes32 loraConfigHash;
        bytes32 strategyId;
        bytes32 headSha256; // adapter the open round starts from; after completion, the final global adapter
    }

    /// @notice What a view returns about one identity's submission in one round.
    struct SubmissionInfo {
        bytes32 adapterSha256; // zero when the identity did not submit
        uint64 numExamples;
        uint40 submittedAt;
        bool aggregated; // listed as a contributor of the round's global adapter
        uint96 weight; // its weight there, in units of 1e-18
    }

    /// @notice The task id does not exist.
    error FederationUnknownTask(uint256 task);
    /// @notice A zero address was given.
    error FederationZeroAddress();
    /// @notice The task's round settings are invalid: each must be at least 1, the minimum of contributors at most
    /// MAX_MIN_UPDATES, the round duration at most 2^32 - 1 seconds and the example cap at most 2^56 - 1.
    error FederationInvalidTaskConfig(
        uint32 minUpdates, uint64 roundDuration, uint32 maxRounds, uint64 maxExamples, uint64 maxUpdateNorm
    );
    /// @notice Only the task's aggregator may do this.
    error FederationNotAggregator(uint256 task, address caller);
    /// @notice The first round is already open (or the task completed).
    error FederationAlreadyStarted(uint256 task);
    /// @notice `round` is not the task's open round.
    error FederationRoundNotOpen(uint256 task, uint256 round);
    /// @notice The round's deadline has passed.
    error FederationDeadlinePassed(uint256 task, uint256 round, uint64 deadline);
    /// @notice The address has no identity, or its identity is not Active.
    error FederationIdentityNotActive(address signer, uint256 identity, uint8 status);
    /// @notice The identity already submitted in this round.
    error FederationAlreadySubmitted(uint256 task, uint256 round, uint256 identity);
    /// @notice Empty CID.
    error FederationZeroCid();
    /// @notice Zero sha256 digest.
    error FederationZeroDigest();
    /// @notice Zero training examples.
    error FederationZeroExamples();
    /// @notice More training examples claimed than the task allows one identity per round.
    error FederationTooManyExamples(uint256 task, uint256 identity, uint64 numExamples, uint64 maxExamples);
    /// @notice Contributors and weights differ in length.
    error FederationLengthMismatch(uint256 contributors, uint256 weights);
    /// @notice Fewer contributors than the task's minimum.
    error FederationTooFewUpdates(uint256 task, uint256 round, uint256 given, uint256 required);
    /// @notice Contributors must be listed in strictly increasing identity order.
    error FederationContributorsNotSorted(uint256 index, uint256 identity);
    /// @notice A listed contributor did not submit in the round.
    error FederationNotSubmitter(uint256 task, uint256 round, uint256 identity);
    /// @notice Weights must add up to exactly 1e18.
    error FederationWeightsSum(uint256 sum);
    /// @notice The caller is not the aggregator the task admin proposed.
    error FederationNotPendingAggregator(uint256 task, address caller);
    /// @notice A relayed signature's deadline has passed.
    error FederationSignatureExpired(uint64 deadline);
    /// @notice The signature recovers to the key of identity `actual`, not the identity `expected` it names.
    error FederationWrongIdentity(address signer, uint256 actual, uint256 expected);
    /// @notice The round may not be closed yet by `caller`: the aggregator may after the deadline, anyone after the
    /// deadline plus one more round duration.
    error FederationTooEarlyToClose(uint256 task, uint256 round, address caller, uint256 allowedAfter);
    /// @notice The CID given is not the one the round started from.
    error FederationWrongStartCid(uint256 task, uint256 round);
    /// @notice A round must be finalized under the task's own strategy.
    error FederationWrongStrategy(uint256 task, bytes32 expected, bytes32 given);
    /// @notice The secure threshold must be at least 2 and at most the task's minimum of contributors, which may be
    /// at most MAX_SECURE_PARTICIPANTS.
    error FederationInvalidThreshold(uint32 threshold, uint32 minUpdates);
    /// @notice The call belongs to the other privacy mode than the task's.
    error FederationWrongPrivacy(uint256 task, Privacy mode);
    /// @notice The secure round is not in the phase this call belongs to.
    error FederationWrongPhase(uint256 task, uint256 round, SecurePhase expected, SecurePhase actual);
    /// @notice The identity already did this step of the secure round.
    error FederationAlreadyDone(uint256 task, uint256 round, uint256 identity, SecurePhase phase);
    /// @notice The identity did not do the step of the secure round this one builds on.
    error FederationNotParticipant(uint256 task, uint256 round, uint256 identity, SecurePhase missing);
    /// @notice Too few identities did the phase's step to go on (the threshold, or the minimum of contributors).
    error FederationPhaseShort(uint256 task, uint256 round, SecurePhase phase, uint256 count, uint256 required);
    /// @notice More identities than a secure round can take.
    error FederationTooManyParticipants(uint256 task, uint256 round, uint256 limit);
    /// @notice A secure round's contributors must be exactly its survivors.
    error FederationNotSurvivors(uint256 task, uint256 round, uint256 given, uint256 survivors);
    /// @notice A zero public key.
    error FederationZeroKey();
    /// @notice A peer announcement that is empty or longer than MAX_PEER_ANNOUNCEMENT bytes.
    error FederationInvalidAnnouncement(uint256 length);
    /// @notice A DP configuration out of range, or a placement that does not match the privacy mode.
    error FederationInvalidDpConfig(uint64 noiseMultiplier, uint64 delta, uint64 epsilonMax, NoisePlacement placement);
    /// @notice A DP task's rounds are finalized with finalizeDpRound (and only a DP task's).
    error FederationDpMismatch(uint256 task, bool dpTask);
    /// @notice The reported privacy spent is below what the task already spent, or above its budget.
    error FederationBudgetExceeded(uint256 task, uint256 round, uint64 epsilon, uint64 spent, uint64 epsilonMax);
    /// @notice A DP task averages uniformly: every weight must be WEIGHT_SCALE / n, up to the rounding remainder.
    error FederationWeightsNotUniform(uint256 index, uint96 weight);

    /// @notice A task was created.
    event TaskCreated(
        uint256 indexed task,
        address indexed aggregator,
        bytes32 indexed strategyId,
        string baseModelCid,
        bytes32 baseModelSha256,
        bytes32 loraConfigHash,
        uint32 minUpdates,
        uint64 roundDuration,
        uint32 maxRounds,
        uint64 maxExamples,
        uint64 maxUpdateNorm
    );
    /// @notice The task admin proposed `proposed` as the task's next aggregator (zero: no handover pending).
    event AggregatorProposed(uint256 indexed task, address indexed current, address indexed proposed);
    /// @notice The proposed aggregator accepted: from now on only `current` may open, finalize and close rounds.
    event AggregatorChanged(uint256 indexed task, address indexed previous, address indexed current);
    /// @notice Round `round` ended without a global adapter (too few usable updates by its deadline, or no aggregator
    /// acted); the next round starts from the same adapter.
    event RoundClosed(uint256 indexed task, uint256 indexed round, address closedBy);
    /// @notice A round opened, starting from the adapter `startCid` / `startSha256`.
    event RoundOpened(
        uint256 indexed task, uint256 indexed round, string startCid, bytes32 startSha256, uint64 deadline
    );
    /// @notice Identity `identity` (key `signer`) committed an update; `relayer` is the sender when relayed, zero when
    /// the identity sent it itself.
    event UpdateSubmitted(
        uint256 indexed task,
        uint256 indexed round,
        uint256 indexed identity,
        address signer,
        address relayer,
        string cid,
        bytes32 adapterSha256,
        uint64 numExamples,
        bytes32 metricsDigest
    );
    /// @notice The aggregator published the round's global adapter, made by strategy `strategyId` from `contributors`
    /// with `weights`.
    event RoundFinalized(
        uint256 indexed task,
        uint256 indexed round,
        bytes32 indexed strategyId,
        string globalCid,
        bytes32 globalSha256,
        uint256[] contributors,
        uint96[] weights
    );
    /// @notice The aggregator of an open task could not fetch the updates of `identities` in round `round` (no peer
    /// served their bytes in time): a claim about the past that nobody can check later, recorded so that each one
    /// is public, counted per identity, and excused from the round's contributor set.
    event UpdatesUnavailable(uint256 indexed task, uint256 indexed round, uint256[] identities);
    /// @notice Task `task` runs in privacy mode `mode`; secure tasks need `threshold` survivors' shares to unmask.
    event TaskPrivacy(uint256 indexed task, Privacy mode, uint32 threshold);
    /// @notice Identity `identity` takes part in secure round `round` with these X25519 public keys: one to which its
    /// shares are encrypted, one with which its pairwise masks are agreed.
    event KeysAdvertised(
        uint256 indexed task, uint256 indexed round, uint256 indexed identity, bytes32 encryptionKey, bytes32 maskKey
    );
    /// @notice Identity `identity` pinned its encrypted shares (and their commitments) at `cid` / `digest`.
    event SharesDealt(
        uint256 indexed task, uint256 indexed round, uint256 indexed identity, string cid, bytes32 digest
    );
    /// @notice The aggregator moved secure round `round` into `phase`; `count` identities did the step before it.
    event SecurePhaseAdvanced(uint256 indexed task, uint256 indexed round, SecurePhase phase, uint32 count);
    /// @notice Survivor `identity` revealed its shares (plaintext, checkable against the dealt commitments).
    event SharesRevealed(
        uint256 indexed task, uint256 indexed round, uint256 indexed identity, string cid, bytes32 digest
    );
    /// @notice `account` can be reached for blocks at `multiaddrs` (libp2p multiaddrs ending in /p2p/<peer id>,
    /// separated by spaces). Readers take each account's latest announcement and check it before dialing.
    event PeerAnnounced(address indexed account, string multiaddrs);
    /// @notice Task `task` is differentially private with these settings (see {DpConfig}).
    event TaskDp(
        uint256 indexed task, uint64 noiseMultiplier, uint64 delta, uint64 epsilonMax, NoisePlacement placement
    );
    /// @notice Finalizing round `round` brought the privacy the task has spent to `epsilon` (1e-6 units), as the
    /// aggregator computed it from the task's DP settings; verify recomputes it.
    event PrivacySpent(uint256 indexed task, uint256 indexed round, uint64 epsilon);
    /// @notice The task finalized its last round.
    event TaskCompleted(uint256 indexed task, uint256 rounds, string finalCid, bytes32 finalSha256);

    /// @notice Creates a training task on base model `baseModelCid` / `baseModelSha256` with LoRA config hash
    /// `loraConfigHash`, run by `aggregator` with strategy `strategyId`.
    /// Requirements: caller has TASK_ADMIN_ROLE; `aggregator` non-zero; `baseModelCid` non-empty;
    /// `baseModelSha256` non-zero; `minUpdates` (at most MAX_MIN_UPDATES), `roundDuration` (below 2^32 seconds),
    /// `maxRounds`, `maxExamples` (below 2^56) and `maxUpdateNorm` each at least 1.
    /// Emits {TaskCreated}.
    function createTask(TaskConfig calldata config) external returns (uint256 taskId);

    /// @notice Creates a task as {createTask} does, in secure mode: updates are masked, and `threshold` survivors'
    /// shares are needed to unmask their sum.
    /// Requirements: as {createTask}; 2 <= `threshold` <= `minUpdates` <= MAX_SECURE_PARTICIPANTS.
    /// Emits {TaskCreated}, then {TaskPrivacy}.
    function createSecureTask(TaskConfig calldata config, uint32 threshold) external returns (uint256 taskId);

    /// @notice Advertises the caller's identity's per-round X25519 public keys for secure round `round`.
    /// Requirements: secure task; `round` open, in phase Keys, deadline not passed; caller Active, not yet
    /// advertised; keys non-zero; fewer than MAX_SECURE_PARTICIPANTS advertised so far.
    /// Emits {KeysAdvertised}.
    function advertiseKeys(uint256 taskId, uint256 round, bytes32 encryptionKey, bytes32 maskKey) external;

    /// @notice Commits the caller's encrypted shares (pinned at `cid` / `digest`) for secure round `round`.
    /// Requirements: phase Shares, deadline not passed; the caller's identity advertised keys and has not dealt.
    /// Emits {SharesDealt}.
    function dealShares(uint256 taskId, uint256 round, string calldata cid, bytes32 digest) external;

    /// @notice Commits the caller's revealed shares (pinned at `cid` / `digest`) for secure round `round`.
    /// Requirements: phase Reveal; the caller's identity submitted a masked update and has not revealed.
    /// Emits {SharesRevealed}.
    function revealShares(uint256 taskId, uint256 round, string calldata cid, bytes32 digest) external;

    /// @notice Moves secure round `round` to its next phase: Keys to Shares once `threshold` identities advertised
    /// keys, Shares to Masked once `threshold` dealt, Masked to Reveal once the minimum of contributors submitted.
    /// The participants, the survivors and the reveals are then fixed by what the chain recorded.
    /// Requirements: caller is the task's aggregator; `round` open and not in phase Reveal.
    /// Emits {SecurePhaseAdvanced}.
    function advancePhase(uint256 taskId, uint256 round) external;

    /// @notice Creates a task as {createTask} (`threshold` 0: open mode, placement Central) or {createSecureTask}
    /// (`threshold` >= 2: secure mode, placement Distributed) does, with client-level differential privacy `dp`.
    /// Its rounds are finalized with {finalizeDpRound}, which records the privacy spent.
    /// Requirements: as {createTask} / {createSecureTask}; noise multiplier and budget non-zero, 0 < delta < 1e18,
    /// the placement matching the mode.
    /// Emits {TaskCreated}, then {TaskPrivacy} (secure mode), then {TaskDp}.
    function createDpTask(TaskConfig calldata config, uint32 threshold, DpConfig calldata dp)
        external
        returns (uint256 taskId);

    /// @notice The task's differential privacy settings (placement None: not a DP task) and the epsilon its
    /// finalized rounds have spent so far (1e-6 units).
    function dpConfig(uint256 taskId) external view returns (DpConfig memory config, uint64 epsilonSpent);

    /// @notice Announces where the caller's IPFS node can be reached (hospitals, aggregators, anyone serving blocks),
    /// so that every party finds the others from the chain alone.
    /// Requirements: `multiaddrs` non-empty and at most MAX_PEER_ANNOUNCEMENT bytes.
    /// Emits {PeerAnnounced}.
    function announcePeer(string calldata multiaddrs) external;

    /// @notice The task's privacy mode and secure threshold (0 for open tasks).
    function privacy(uint256 taskId) external view returns (Privacy mode, uint32 threshold);

    /// @notice Where secure round `round` of `taskId` stands.
    function secureRound(uint256 taskId, uint256 round) external view returns (SecureRoundInfo memory);

    /// @notice Proposes `proposed` as the task's aggregator (zero cancels a pending proposal); it takes over when it
    /// calls {acceptAggregator}. Until then the current aggregator stays in charge.
    /// Requirements: caller has TASK_ADMIN_ROLE; the task exists.
    /// Emits {AggregatorProposed}.
    function proposeAggregator(uint256 taskId, address proposed) external;

    /// @notice The proposed aggregator takes over the task.
    /// Requirements: caller is the task's pending aggregator.
    /// Emits {AggregatorChanged}.
    function acceptAggregator(uint256 taskId) external;

    /// @notice Opens round 1 of `taskId`, starting from the initial adapter `startCid` / `startSha256` (every client
    /// starts from the same LoRA initialisation). Later rounds open by themselves when the previous one is finalized.
    /// Requirements: caller is the task's aggregator; no round was opened yet; CID and digest non-zero.
    /// Emits {RoundOpened}.
    function openFirstRound(uint256 taskId, string calldata startCid, bytes32 startSha256) external;

    /// @notice Commits the caller's identity's update for `round` of `taskId`: adapter `cid` with sha256
    /// `adapterSha256`, trained on `numExamples` examples, with client metrics digest `metricsDigest`.
    /// Requirements: the caller holds an Active identity; `round` is open and its deadline not passed; the identity
    /// has not submitted in this round; CID and digest non-zero; examples non-zero and at most the task's cap.
    /// Emits {UpdateSubmitted}.
    function submitUpdate(
        uint256 taskId,
        uint256 round,
        string calldata cid,
        bytes32 adapterSha256,
        uint64 numExamples,
        bytes32 metricsDigest
    ) external;

    /// @notice Same as {submitUpdate}, sent by anyone (a relayer pays the gas) with the identity's EIP-712
    /// signature over `UpdateCommitment(task, round, identity, cid, adapterSha256, numExamples, metricsDigest,
    /// deadline)`. The domain binds chain id and this contract, so a signature is good for this one commitment of
    /// this one identity, until `deadline`.
    /// Requirements: `deadline` not passed; the signature recovers to the key of `identity`, which is Active;
    /// otherwise as {submitUpdate}.
    /// Emits {UpdateSubmitted} with `relayer` set to the sender.
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
    ) external;

    /// @notice Publishes round `round`'s global adapter `globalCid` / `globalSha256`, made by the task's strategy
    /// `strategyId` from the updates of `contributors` (identity ids, strictly increasing) with `weights` (adding up
    /// to 1e18). Then opens the next round from this adapter, or completes the task after its last round.
    /// Requirements: caller is the task's aggregator; `round` is the open round; `strategyId` is the task's; at
    /// least `minUpdates` contributors with a non-zero weight, each of which submitted in this round; CID and digest
    /// non-zero.
    /// Emits {RoundFinalized}, then {RoundOpened} or {TaskCompleted}.
    function finalizeRound(
        uint256 taskId,
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        uint256[] calldata contributors,
        uint96[] calldata weights,
        bytes32 strategyId
    ) external;

    /// @notice {finalizeRound} for a DP task: also records `epsilonSpent` (1e-6 units), the privacy the task has
    /// spent once this round is published, as the aggregator computed it from the task's DP settings.
    /// Requirements: as {finalizeRound}; a DP task; `epsilonSpent` at least what was spent before and at most the
    /// task's budget; every weight WEIGHT_SCALE / n up to less than n units of 1e-18 (uniform averaging).
    /// Emits {RoundFinalized}, then {PrivacySpent}, then {RoundOpened} or {TaskCompleted}.
    function finalizeDpRound(
        uint256 taskId,
        uint256 round,
        string calldata globalCid,
        bytes32 globalSha256,
        uint256[] calldata contributors,
        uint96[] calldata weights,
        bytes32 strategyId,
        uint64 epsilonSpent
    ) external;

    /// @notice Declares that the aggregator could not fetch the submitted updates of `identitiesList` in round
    /// `round` of an open-mode task, before finalizing it without them (a secure round has its own dropouts).
    /// Requirements: the caller is the task's aggregator; `round` is the open round; every listed identity submitted
    /// in it.
    /// Emits {UpdatesUnavailable}.
    function declareUnavailable(uint256 taskId, uint256 round, uint256[] calldata identitiesList) external;

    /// @notice Ends round `round` without a global adapter and opens the next one from the same adapter (or
    /// completes the task after its last round): for a round that cannot reach its minimum, or whose aggregator
    /// does not act. `startCid` must be the CID the round started from.
    /// Requirements: `round` is the open round; the caller is the aggregator and the deadline has passed, or anyone
    /// and the deadline plus one round duration has passed.
    /// Emits {RoundClosed}, then {RoundOpened} or {TaskCompleted}.
    function closeRound(uint256 taskId, uint256 round, string calldata startCid) external;

    /// @notice The identity registry whose Active tokens may submit.
    function identities() external view returns (ILLMIdentity);

    /// @notice The EIP-712 domain separator (chain id and this contract).
    function domainSeparator() external view returns (bytes32);

    /// @notice The task's settings and where it stands. Reverts for unknown tasks.
    function task(uint256 taskId) external view returns (TaskInfo memory);

    /// @notice What identity `identity` submitted in round `round` of task `taskId` (zeros when nothing).
    function submission(uint256 taskId, uint256 round, uint256 identity) external view returns (SubmissionInfo memory);

    /// @notice Number of tasks created; ids run from 1 to this number.
    function totalTasks() external view returns (uint256);
}
