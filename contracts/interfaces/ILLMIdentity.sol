// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC5192} from "./IERC5192.sol";

/// @title The on-chain identity of one federated LLM client
/// @notice One soulbound ERC-721 token per LLM client, owned by the client's current signing key.
interface ILLMIdentity is IERC5192 {
    /// @notice Lifecycle of an identity. `None` only for ids that were never minted.
    enum Status {
        None,
        Active,
        Suspended,
        Revoked
    }

    /// @notice What a view returns about one identity.
    struct IdentityRecord {
        address signer; // current signing key (the token owner)
        Status status;
        uint64 registeredAt; // block timestamp of the mint
        bytes32 institutionId; // which hospital runs the client
        bytes32 modelFingerprint; // hash of base-model hash + LoRA config
        string metadataCid; // IPFS CID of the client's metadata document
    }

    /// @notice Tokens are soulbound: transfers and approvals always revert.
    error LLMIdentitySoulbound(uint256 tokenId);
    /// @notice A zero address was given as a signing key.
    error LLMIdentityZeroAddress();
    /// @notice The metadata CID is empty.
    error LLMIdentityEmptyMetadata();
    /// @notice The signing key already holds a live (not revoked) identity.
    error LLMIdentitySignerTaken(address signer, uint256 tokenId);
    /// @notice The operation is not allowed from the identity's current status.
    error LLMIdentityInvalidStatus(uint256 tokenId, Status status);

    /// @notice The key-rotation consent's deadline has passed.
    error LLMIdentityConsentExpired(uint64 deadline);
    /// @notice The consent is not signed by the identity's current key (or the identity does not exist).
    error LLMIdentityInvalidConsent(uint256 tokenId);
    /// @notice Only the identity's current key or a registrar may cancel its pending rotation.
    error LLMIdentityNotKeyOrRegistrar(uint256 tokenId, address caller);
    /// @notice The identity has no pending key rotation.
    error LLMIdentityNoPendingRotation(uint256 tokenId);
    /// @notice The pending rotation's delay has not passed.
    error LLMIdentityRotationNotDue(uint256 tokenId, uint64 executableAt);

    /// @notice A new identity was minted to `signer`.
    event IdentityRegistered(
        uint256 indexed tokenId,
        address indexed signer,
        bytes32 indexed institutionId,
        bytes32 modelFingerprint,
        string metadataCid
    );
    /// @notice An active identity was suspended; it cannot submit until reinstated.
    event IdentitySuspended(uint256 indexed tokenId);
    /// @notice A suspended identity was made active again.
    event IdentityReinstated(uint256 indexed tokenId);
    /// @notice An identity was revoked for good; its key is released.
    event IdentityRevoked(uint256 indexed tokenId, address indexed signer);
    /// @notice A registrar proposed moving the identity to `newSigner` without its key's consent; it can happen at
    /// `executableAt` unless the identity's current key cancels it first.
    event KeyRotationProposed(uint256 indexed tokenId, address indexed newSigner, uint64 executableAt);
    /// @notice A pending key rotation was cancelled by `by` (the identity's key contesting it, or a registrar).
    event KeyRotationCancelled(uint256 indexed tokenId, address indexed by);
    /// @notice The identity was rebound from `oldSigner` to `newSigner` (key rotation).
    event IdentityKeyRotated(uint256 indexed tokenId, address indexed oldSigner, address indexed newSigner);

    /// @notice Mints a new identity to `signer`.
    /// Requirements: caller has REGISTRAR_ROLE; `signer` is non-zero and holds no live identity; `metadataCid` is
    /// not empty.
    /// Emits {IdentityRegistered}, {Locked} and ERC-721 {Transfer}.
    function register(address signer, bytes32 institutionId, bytes32 modelFingerprint, string calldata metadataCid)
        external
        returns (uint256 tokenId);

    /// @notice Suspends an active identity: it cannot submit updates until reinstated.
    /// Requirements: caller has REGISTRAR_ROLE; the identity is Active.
    /// Emits {IdentitySuspended}.
    function suspend(uint256 tokenId) external;

    /// @notice Makes a suspended identity active again.
    /// Requirements: caller has REGISTRAR_ROLE; the identity is Suspended.
    /// Emits {IdentityReinstated}.
    function reinstate(uint256 tokenId) external;

    /// @notice Revokes an identity for good and releases its signing key, which may later hold a new identity.
    /// The token stays (owned by its last key) so that history keeps pointing at it.
    /// Requirements: caller has REGISTRAR_ROLE; the identity is Active or Suspended.
    /// Emits {IdentityRevoked}.
    function revoke(uint256 tokenId) external;

    /// @notice Rebinds an identity to a new signing key (key rotation) with its consent: `signature` is the current
    /// key's EIP-712 signature over `KeyRotation(identity, newSigner, nonce, deadline)` (nonce: {rotationNonce}).
    /// The token moves to `newSigner`.
    /// Requirements: caller has REGISTRAR_ROLE; `deadline` not passed; the signature is the current key's; the
    /// identity is Active or Suspended; `newSigner` is non-zero and holds no live identity.
    /// Emits {IdentityKeyRotated} and ERC-721 {Transfer}.
    function rotateKey(uint256 tokenId, address newSigner, uint64 deadline, bytes calldata signature) external;

    /// @notice Proposes a rotation without the key's consent (the key is lost): it can be completed after
    /// KEY_ROTATION_DELAY unless the identity's current key cancels it (a stolen registrar account cannot take an
    /// identity over without the hospital seeing it coming). A new proposal replaces a pending one.
    /// Requirements: caller has REGISTRAR_ROLE; as {rotateKey} for the identity and `newSigner`.
    /// Emits {KeyRotationProposed}.
    function proposeKeyRotation(uint256 tokenId, address newSigner) external;

    /// @notice Cancels the identity's pending rotation (the hospital contests it).
    /// Requirements: caller is the identity's current key or has REGISTRAR_ROLE; a rotation is pending.
    /// Emits {KeyRotationCancelled}.
    function cancelKeyRotation(uint256 tokenId) external;

    /// @notice Completes a proposed rotation once its delay has passed.
    /// Requirements: caller has REGISTRAR_ROLE; a rotation is pending and due; as {rotateKey} for the identity and
    /// the new key at this time.
    /// Emits {IdentityKeyRotated} and ERC-721 {Transfer}.
    function completeKeyRotation(uint256 tokenId) external;

    /// @notice The identity's pending rotation; (0, 0) when none.
    function pendingKeyRotation(uint256 tokenId) external view returns (address newSigner, uint64 executableAt);

    /// @notice The nonce the next key-rotation consent of `tokenId` must sign (rotations done so far).
    function rotationNonce(uint256 tokenId) external view returns (uint32);

    /// @notice The EIP-712 domain separator of key-rotation consents (chain id and this contract).
    function domainSeparator() external view returns (bytes32);

    /// @notice The live identity bound to `signer` and its status; (0, None) when there is none.
    function identityOfSigner(address signer) external view returns (uint256 tokenId, Status status);

    /// @notice Everything stored about identity `tokenId`. Reverts for ids never minted.
    function identity(uint256 tokenId) external view returns (IdentityRecord memory);

    /// @notice Number of identities ever minted; ids run from 1 to this number.
    function totalIdentities() external view returns (uint256);
}
