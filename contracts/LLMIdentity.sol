// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ILLMIdentity} from "./interfaces/ILLMIdentity.sol";

/// @title LLMIdentity
/// @notice Soulbound (ERC-5192) ERC-721 registry of federated LLM clients. The consortium's registrar mints one
/// token per client to the client's signing key, and can suspend, reinstate and revoke it. A key moves to a new
/// address only with the identity's consent: its current key's signature, or a delay during which that key can
/// cancel the move.
contract LLMIdentity is ERC721, AccessControl, EIP712, ILLMIdentity {
    /// @notice Role that mints, suspends, reinstates, revokes identities and rotates their keys (with consent).
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    /// @notice EIP-712 type of an identity's consent to move to a new key.
    bytes32 public constant KEY_ROTATION_TYPEHASH =
        keccak256("KeyRotation(uint256 identity,address newSigner,uint32 nonce,uint64 deadline)");

    /// @notice How long a rotation proposed without the key's consent waits; its current key may cancel it.
    uint64 public constant KEY_ROTATION_DELAY = 3 days;

    struct SignerBinding {
        uint248 tokenId;
        Status status;
    }

    struct Identity {
        bytes32 institutionId;
        bytes32 modelFingerprint;
        uint64 registeredAt;
        Status status;
        uint32 rotations; // nonce of the key-rotation consent
    }

    struct PendingRotation {
        address newSigner;
        uint64 executableAt;
    }

    uint256 private _lastTokenId;
    mapping(uint256 tokenId => Identity) private _identities;
    mapping(uint256 tokenId => string) private _metadataCids;
    /// @dev The live identity of each key, with its status mirrored here so that the Federation's check on every
    /// submission reads one slot.
    mapping(address signer => SignerBinding) private _bindings;
    /// @dev Set only while the registrar rotates a key, so that `_update` lets that one move through.
    bool private _rotating;
    mapping(uint256 tokenId => PendingRotation) private _pendingRotations;

    constructor(address admin)
        ERC721("Flow of Knowledge LLM Identity", "FOKID")
        EIP712("FlowOfKnowledgeIdentity", "1")
    {
        if (admin == address(0)) revert LLMIdentityZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REGISTRAR_ROLE, admin);
    }

    /// @inheritdoc ILLMIdentity
    function register(address signer, bytes32 institutionId, bytes32 modelFingerprint, string calldata metadataCid)
        external
        onlyRole(REGISTRAR_ROLE)
        returns (uint256 tokenId)
    {
        if (signer == address(0)) revert LLMIdentityZeroAddress();
        if (bytes(metadataCid).length == 0) revert LLMIdentityEmptyMetadata();
        uint256 taken = _bindings[signer].tokenId;
        if (taken != 0) revert LLMIdentitySignerTaken(signer, taken);

        tokenId = ++_lastTokenId;
        _identities[tokenId] = Identity({
            institutionId: institutionId,
            modelFingerprint: modelFingerprint,
            registeredAt: uint64(block.timestamp),
            status: Status.Active,
            rotations: 0
        });
        _metadataCids[tokenId] = metadataCid;
        _bindings[signer] = SignerBinding({tokenId: uint248(tokenId), status: Status.Active});
        _mint(signer, tokenId);
        emit IdentityRegistered(tokenId, signer, institutionId, modelFingerprint, metadataCid);
        emit Locked(tokenId);
    }

    /// @inheritdoc ILLMIdentity
    function suspend(uint256 tokenId) external onlyRole(REGISTRAR_ROLE) {
        _requireStatus(tokenId, Status.Active);
        _setStatus(tokenId, Status.Suspended);
        emit IdentitySuspended(tokenId);
    }

    /// @inheritdoc ILLMIdentity
    function reinstate(uint256 tokenId) external onlyRole(REGISTRAR_ROLE) {
        _requireStatus(tokenId, Status.Suspended);
        _setStatus(tokenId, Status.Active);
        emit IdentityReinstated(tokenId);
    }

    /// @inheritdoc ILLMIdentity
    function revoke(uint256 tokenId) external onlyRole(REGISTRAR_ROLE) {
        Status status = _identities[tokenId].status;
        if (status != Status.Active && status != Status.Suspended) {
            revert LLMIdentityInvalidStatus(tokenId, status);
        }
        _identities[tokenId].status = Status.Revoked;
        address signer = _ownerOf(tokenId);
        delete _bindings[signer];
        emit IdentityRevoked(tokenId, signer);
    }

    /// @inheritdoc ILLMIdentity
    function rotateKey(uint256 tokenId, address newSigner, uint64 deadline, bytes calldata signature)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (block.timestamp > deadline) revert LLMIdentityConsentExpired(deadline);
        address current = _ownerOf(tokenId);
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(KEY_ROTATION_TYPEHASH, tokenId, newSigner, _identities[tokenId].rotations, deadline)
            )
        );
        if (current == address(0) || !SignatureChecker.isValidSignatureNow(current, digest, signature)) {
            revert LLMIdentityInvalidConsent(tokenId);
        }
        _rotate(tokenId, newSigner);
    }

    /// @inheritdoc ILLMIdentity
    function proposeKeyRotation(uint256 tokenId, address newSigner) external onlyRole(REGISTRAR_ROLE) {
        _requireRotatable(tokenId, newSigner);
        uint64 executableAt = uint64(block.timestamp) + KEY_ROTATION_DELAY;
        _pendingRotations[tokenId] = PendingRotation({newSigner: newSigner, executableAt: executableAt});
        emit KeyRotationProposed(tokenId, newSigner, executableAt);
    }

    /// @inheritdoc ILLMIdentity
    function cancelKeyRotation(uint256 tokenId) external {
        if (msg.sender != _ownerOf(tokenId) && !hasRole(REGISTRAR_ROLE, msg.sender)) {
            revert LLMIdentityNotKeyOrRegistrar(tokenId, msg.sender);
        }
        if (_pendingRotations[tokenId].newSigner == address(0)) revert LLMIdentityNoPendingRotation(tokenId);
        delete _pendingRotations[tokenId];
        emit KeyRotationCancelled(tokenId, msg.sender);
    }

    /// @inheritdoc ILLMIdentity
    function completeKeyRotation(uint256 tokenId) external onlyRole(REGISTRAR_ROLE) {
        PendingRotation memory p = _pendingRotations[tokenId];
        if (p.newSigner == address(0)) revert LLMIdentityNoPendingRotation(tokenId);
        if (block.timestamp < p.executableAt) revert LLMIdentityRotationNotDue(tokenId, p.executableAt);
        delete _pendingRotations[tokenId];
        _rotate(tokenId, p.newSigner);
    }

    /// @inheritdoc ILLMIdentity
    function pendingKeyRotation(uint256 tokenId) external view returns (address newSigner, uint64 executableAt) {
        PendingRotation memory p = _pendingRotations[tokenId];
        return (p.newSigner, p.executableAt);
    }

    /// @inheritdoc ILLMIdentity
    function rotationNonce(uint256 tokenId) external view returns (uint32) {
        return _identities[tokenId].rotations;
    }

    /// @inheritdoc ILLMIdentity
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc ILLMIdentity
    function identityOfSigner(address signer) external view returns (uint256 tokenId, Status status) {
        SignerBinding memory b = _bindings[signer];
        return (b.tokenId, b.status);
    }

    /// @inheritdoc ILLMIdentity
    function identity(uint256 tokenId) external view returns (IdentityRecord memory) {
        address signer = _requireOwned(tokenId);
        Identity storage id = _identities[tokenId];
        return IdentityRecord({
            signer: signer,
            status: id.status,
            registeredAt: id.registeredAt,
            institutionId: id.institutionId,
            modelFingerprint: id.modelFingerprint,
            metadataCid: _metadataCids[tokenId]
        });
    }

    /// @inheritdoc ILLMIdentity
    function totalIdentities() external view returns (uint256) {
        return _lastTokenId;
    }

    /// @notice Every identity is locked for good (ERC-5192). Reverts for ids never minted.
    function locked(uint256 tokenId) external view returns (bool) {
        _requireOwned(tokenId);
        return true;
    }

    /// @notice `ipfs://<metadata CID>`. Reverts for ids never minted.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return string.concat("ipfs://", _metadataCids[tokenId]);
    }

    /// @notice Always reverts: identities are soulbound.
    function approve(address, uint256 tokenId) public pure override {
        revert LLMIdentitySoulbound(tokenId);
    }

    /// @notice Always reverts: identities are soulbound.
    function setApprovalForAll(address, bool) public pure override {
        revert LLMIdentitySoulbound(0);
    }

    function supportsInterface(bytes4 interfaceId) public view override(ERC721, AccessControl) returns (bool) {
        return interfaceId == 0xb45a3c0e // ERC-5192
            || ERC721.supportsInterface(interfaceId) || AccessControl.supportsInterface(interfaceId);
    }

    /// @dev Blocks every transfer (mints and the registrar's key rotation excepted).
    function _update(address to, uint256 tokenId, address auth) internal override returns (address) {
        if (_ownerOf(tokenId) != address(0) && !_rotating) revert LLMIdentitySoulbound(tokenId);
        return super._update(to, tokenId, auth);
    }

    function _rotate(uint256 tokenId, address newSigner) private {
        _requireRotatable(tokenId, newSigner);
        address oldSigner = _ownerOf(tokenId);
        _bindings[newSigner] = _bindings[oldSigner];
        delete _bindings[oldSigner];
        ++_identities[tokenId].rotations;
        _rotating = true;
        _update(newSigner, tokenId, address(0));
        _rotating = false;
        emit IdentityKeyRotated(tokenId, oldSigner, newSigner);
    }

    function _requireRotatable(uint256 tokenId, address newSigner) private view {
        Status status = _identities[tokenId].status;
        if (status != Status.Active && status != Status.Suspended) {
            revert LLMIdentityInvalidStatus(tokenId, status);
        }
        if (newSigner == address(0)) revert LLMIdentityZeroAddress();
        uint256 taken = _bindings[newSigner].tokenId;
        if (taken != 0) revert LLMIdentitySignerTaken(newSigner, taken);
    }

    function _setStatus(uint256 tokenId, Status status) private {
        _identities[tokenId].status = status;
        _bindings[_ownerOf(tokenId)].status = status;
    }

    function _requireStatus(uint256 tokenId, Status required) private view {
        Status status = _identities[tokenId].status;
        if (status != required) revert LLMIdentityInvalidStatus(tokenId, status);
    }
}
