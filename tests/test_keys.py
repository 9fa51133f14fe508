"""Key model rules: permissions, IP lists, expiry, generation, secrets at rest."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.errors import ParameterError
from keyplane.keys import (
    DAY_MS,
    GROUPS,
    IpAllowlist,
    KeyEncryptionKey,
    Permissions,
    SecretDecryptionError,
    expiry_for,
    iso_utc,
    new_api_key,
    new_hmac_secret,
)
from keyplane.secret import Secret


class TestPermissions:
    def test_wire_form_has_every_group(self) -> None:
        """to_wire lists every Bybit group, [] when empty, values in Bybit's order."""
        wire = Permissions.parse("Wallet:Withdraw,Wallet:AccountTransfer,Spot:SpotTrade").to_wire()
        assert list(wire) == list(GROUPS)
        assert wire["Wallet"] == ["AccountTransfer", "Withdraw"]
        assert wire["Options"] == []

    @pytest.mark.parametrize("text", ["Spot:Trade", "Futures:Order", "Spot", "Spot:"])
    def test_unknown_names_are_10001(self, text: str) -> None:
        """Names are Bybit's exactly; anything else is a parameter error."""
        with pytest.raises(ParameterError):
            Permissions.parse(text)

    def test_master_and_sub_only_grants(self) -> None:
        """Withdraw is master-only; SubMemberTransferList is sub-only."""
        with pytest.raises(ParameterError, match="sub account"):
            Permissions.parse("Wallet:Withdraw").check_account_kind(is_master=False)
        with pytest.raises(ParameterError, match="master account"):
            Permissions.parse("Wallet:SubMemberTransferList").check_account_kind(is_master=True)

    def test_text_round_trip(self) -> None:
        """to_text/parse round-trip."""
        p = Permissions.all_for(is_master=True)
        assert Permissions.parse(p.to_text()) == p


class TestIpAllowlist:
    @pytest.mark.parametrize("text", ["", "*", " * "])
    def test_unbound_forms(self, text: str) -> None:
        """'' and '*' mean unbound; wire form ["*"]."""
        assert IpAllowlist.parse(text).to_list() == ["*"]

    def test_hosts_and_cidrs(self) -> None:
        """Hosts print without a prefix length; CIDRs keep it; duplicates fold."""
        ips = IpAllowlist.parse("1.2.3.4, 10.0.0.0/8,2001:db8::/32,1.2.3.4")
        assert ips.to_list() == ["1.2.3.4", "10.0.0.0/8", "2001:db8::/32"]

    @pytest.mark.parametrize("text", ["1.2.3", "10.0.0.1/8", "*,1.2.3.4", "abc"])
    def test_invalid_is_10001(self, text: str) -> None:
        """Bad addresses, host bits in a CIDR, or '*' mixed with IPs -> 10001."""
        with pytest.raises(ParameterError):
            IpAllowlist.parse(text)

    @given(st.lists(st.ip_addresses(), min_size=1, max_size=5))
    def test_listed_addresses_are_allowed(self, addrs: list[object]) -> None:
        """Every address in the list is allowed."""
        ips = IpAllowlist.parse([str(a) for a in addrs])
        assert all(ips.allows(str(a)) for a in addrs)


class TestExpiry:
    def test_unbound_keys_expire_after_90_days_bound_never(self) -> None:
        """Bybit rule: unbound 90 days; bound keys do not expire."""
        assert expiry_for(IpAllowlist(), since_ms=0) == 90 * DAY_MS
        assert expiry_for(IpAllowlist.parse("1.2.3.4"), since_ms=0) is None

    def test_iso_format(self) -> None:
        """createdAt/expiredAt are ISO 8601 UTC with Z."""
        assert iso_utc(1_700_000_000_000) == "2023-11-14T22:13:20Z"
        assert iso_utc(None) == ""


class TestGeneration:
    def test_shapes(self) -> None:
        """api keys are 18 alphanumerics, secrets 36; fresh each time."""
        keys = {new_api_key() for _ in range(50)}
        assert len(keys) == 50
        assert all(len(k) == 18 and k.isalnum() for k in keys)
        secret = new_hmac_secret()
        assert len(secret.reveal()) == 36
        assert secret.reveal().isalnum()


class TestKeyEncryption:
    def test_round_trip_and_binding_to_api_key(self) -> None:
        """A ciphertext decrypts only for its own api key and KEK."""
        kek = KeyEncryptionKey.generate()
        blob = kek.encrypt(Secret("my-secret"), associated="KEY1")
        assert b"my-secret" not in blob
        assert kek.decrypt(blob, associated="KEY1").reveal() == "my-secret"
        with pytest.raises(SecretDecryptionError):
            kek.decrypt(blob, associated="KEY2")
        with pytest.raises(SecretDecryptionError):
            KeyEncryptionKey.generate().decrypt(blob, associated="KEY1")

    def test_kek_file_is_created_0600_and_reused(self, tmp_path: Path) -> None:
        """The embedded KEK file is private to the owner and stable across loads."""
        path = tmp_path / "keyplane.db.kek"
        first = KeyEncryptionKey.load_or_create_file(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second = KeyEncryptionKey.load_or_create_file(path)
        assert first.to_base64() == second.to_base64()
        assert len(base64.b64decode(path.read_text())) == 32
        assert "*" in repr(first)

    def test_bad_kek_text_is_refused(self) -> None:
        """KEYPLANE_KEK must be base64 of exactly 32 bytes."""
        with pytest.raises(ValueError, match="32"):
            KeyEncryptionKey.from_base64(Secret(base64.b64encode(b"short").decode()))
        with pytest.raises(ValueError, match="base64"):
            KeyEncryptionKey.from_base64(Secret("!!!"))
