"""The Store contract: MemoryStore and SqlStore (SQLite, PostgreSQL) behave the same."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.errors import NotFoundError
from keyplane.keys.ips import IpAllowlist
from keyplane.keys.limits import RateOverrides
from keyplane.keys.model import Account, AccountStatus, ApiKey, KeyStatus, KeyType
from keyplane.keys.permissions import Permissions
from keyplane.store import SqlStore, Store, open_store
from keyplane.store.sql import display_url, normalize_url

T0 = 1_700_000_000_000  # ms since epoch

RSA_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "-----END PUBLIC KEY-----\n"
)


def new_key(uid: int, api_key: str = "KEY000000000000001", **changes: Any) -> ApiKey:
    """An HMAC key record (id 0) for uid, with field overrides."""
    key = ApiKey(
        id=0,
        api_key=api_key,
        uid=uid,
        key_type=KeyType.HMAC,
        read_only=False,
        permissions=Permissions.parse("Spot:SpotTrade,ContractTrade:Order"),
        ips=IpAllowlist.parse("*"),
        created_at_ms=T0,
        expires_at_ms=T0 + 90 * 86_400_000,
        note="bot",
        secret_ciphertext=b"\x00\x01cipher\xff",
    )
    return key.with_changes(**changes)


def master(store: Store) -> Account:
    """A fresh master account."""
    return store.create_account(parent_uid=None, created_at_ms=T0)


class TestAccounts:
    def test_uids_ascend_from_100001(self, store: Store) -> None:
        """The first uid is 100001 and each later account gets the next one."""
        uids = [master(store).uid for _ in range(3)]
        assert uids == [100001, 100002, 100003]

    def test_account_round_trip(self, store: Store) -> None:
        """find_account returns every field create_account stored."""
        created = store.create_account(
            parent_uid=None, created_at_ms=T0 + 5, username="alice", note="desk A"
        )
        assert store.find_account(created.uid) == created
        assert created == Account(
            uid=100001,
            parent_uid=None,
            created_at_ms=T0 + 5,
            username="alice",
            note="desk A",
            status=AccountStatus.ACTIVE,
        )

    def test_sub_account_keeps_its_parent(self, store: Store) -> None:
        """A sub account records its master's uid and is not a master."""
        parent = master(store)
        sub = store.create_account(parent_uid=parent.uid, created_at_ms=T0, username="sub1")
        found = store.find_account(sub.uid)
        assert found is not None
        assert found.parent_uid == parent.uid
        assert not found.is_master

    def test_unknown_parent_is_not_found(self, store: Store) -> None:
        """A sub account of an unknown uid raises NotFoundError and creates nothing."""
        with pytest.raises(NotFoundError):
            store.create_account(parent_uid=999_999, created_at_ms=T0)
        assert store.count_accounts() == 0
        assert store.revision() == 0

    def test_find_unknown_account_is_none(self, store: Store) -> None:
        """An unknown uid finds None."""
        assert store.find_account(123) is None

    def test_list_all_and_by_parent(self, store: Store) -> None:
        """list_accounts gives all by uid, or only the sub accounts of one parent."""
        a, b = master(store), master(store)
        a1 = store.create_account(parent_uid=a.uid, created_at_ms=T0)
        b1 = store.create_account(parent_uid=b.uid, created_at_ms=T0)
        a2 = store.create_account(parent_uid=a.uid, created_at_ms=T0)
        assert [x.uid for x in store.list_accounts()] == [a.uid, b.uid, a1.uid, b1.uid, a2.uid]
        assert store.list_accounts(parent_uid=a.uid) == [a1, a2]
        assert store.list_accounts(parent_uid=b1.uid) == []

    def test_count(self, store: Store) -> None:
        """count_accounts counts masters and subs."""
        parent = master(store)
        store.create_account(parent_uid=parent.uid, created_at_ms=T0)
        assert store.count_accounts() == 2

    def test_save_account_persists_status_note_username(self, store: Store) -> None:
        """save_account stores a new status, note and username."""
        account = master(store)
        changed = Account(
            uid=account.uid,
            parent_uid=account.parent_uid,
            created_at_ms=account.created_at_ms,
            username="renamed",
            note="frozen by ops",
            status=AccountStatus.FROZEN,
        )
        store.save_account(changed)
        assert store.find_account(account.uid) == changed

    def test_save_unknown_account_is_not_found(self, store: Store) -> None:
        """save_account of an unknown uid raises NotFoundError."""
        ghost = Account(uid=424242, parent_uid=None, created_at_ms=T0)
        with pytest.raises(NotFoundError):
            store.save_account(ghost)


KEY_VARIANTS = {
    "hmac-ipv4-ipv6": {
        "ips": IpAllowlist.parse("203.0.113.7,10.0.0.0/8,2001:db8::/32,2001:db8:1::1"),
        "expires_at_ms": None,
        "secret_ciphertext": bytes(range(256)),
    },
    "rsa-unbound-read-only": {
        "key_type": KeyType.RSA,
        "read_only": True,
        "permissions": Permissions(),
        "secret_ciphertext": None,
        "rsa_public_key": RSA_PUBLIC_KEY,
        "note": "",
    },
    "all-times-set": {
        "permissions": Permissions.all_for(is_master=True),
        "status": KeyStatus.SUSPENDED,
        "revoked_at_ms": T0 + 3,
        "last_used_at_ms": T0 + 2,
        "updated_at_ms": T0 + 1,
        "note": "ünïcode note",
    },
}


class TestKeys:
    @pytest.mark.parametrize("changes", KEY_VARIANTS.values(), ids=KEY_VARIANTS.keys())
    def test_round_trip_every_field(self, store: Store, changes: dict[str, Any]) -> None:
        """find_key returns exactly the record add_key stored, with the assigned id."""
        account = master(store)
        added = store.add_key(new_key(account.uid, **changes))
        assert added == new_key(account.uid, id=1, **changes)
        assert store.find_key(added.api_key) == added

    def test_ids_ascend_from_1(self, store: Store) -> None:
        """Key ids start at 1 and ascend, ignoring the id passed in."""
        uid = master(store).uid
        ids = [store.add_key(new_key(uid, f"K{n}", id=77)).id for n in range(3)]
        assert ids == [1, 2, 3]

    def test_duplicate_api_key_is_value_error(self, store: Store) -> None:
        """A second key with the same api_key raises ValueError and changes nothing."""
        uid = master(store).uid
        store.add_key(new_key(uid, "DUP"))
        revision = store.revision()
        with pytest.raises(ValueError, match="duplicate"):
            store.add_key(new_key(uid, "DUP", note="other"))
        assert store.revision() == revision
        assert [k.note for k in store.list_keys()] == ["bot"]
        assert store.add_key(new_key(uid, "NEXT")).id == 2

    def test_overlong_api_key_is_value_error(self, store: Store) -> None:
        """An api_key over 64 characters is refused the same way on every backend."""
        uid = master(store).uid
        with pytest.raises(ValueError, match="64"):
            store.add_key(new_key(uid, "A" * 65))

    def test_unknown_uid_is_not_found(self, store: Store) -> None:
        """A key for an unknown uid raises NotFoundError and is not stored."""
        with pytest.raises(NotFoundError):
            store.add_key(new_key(100001))
        assert store.find_key("KEY000000000000001") is None

    def test_find_unknown_key_is_none(self, store: Store) -> None:
        """An unknown api_key finds None."""
        assert store.find_key("NOPE") is None

    def test_save_key_persists_changes(self, store: Store) -> None:
        """save_key stores every mutable field."""
        uid = master(store).uid
        added = store.add_key(new_key(uid))
        changed = added.with_changes(
            read_only=True,
            permissions=Permissions.parse("Wallet:AccountTransfer"),
            ips=IpAllowlist.parse("2001:db8::/48"),
            note="edited",
            status=KeyStatus.SUSPENDED,
            secret_ciphertext=b"rewrapped",
            expires_at_ms=None,
            updated_at_ms=T0 + 10,
            last_used_at_ms=T0 + 9,
        )
        store.save_key(changed)
        assert store.find_key(added.api_key) == changed

    def test_save_key_keeps_identity(self, store: Store) -> None:
        """save_key never changes api_key, uid or created_at_ms."""
        a, b = master(store), master(store)
        added = store.add_key(new_key(a.uid, "ORIGINAL"))
        store.save_key(added.with_changes(api_key="OTHER", uid=b.uid, created_at_ms=1, note="x"))
        found = store.find_key("ORIGINAL")
        assert found == added.with_changes(note="x")
        assert store.find_key("OTHER") is None

    def test_save_unknown_key_is_not_found(self, store: Store) -> None:
        """save_key of an unknown id raises NotFoundError."""
        uid = master(store).uid
        with pytest.raises(NotFoundError):
            store.save_key(new_key(uid, id=99))

    def test_revoked_key_is_still_found(self, store: Store) -> None:
        """A revoked key is kept: find_key and list_keys still return it."""
        uid = master(store).uid
        added = store.add_key(new_key(uid))
        revoked = added.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=T0 + 1)
        store.save_key(revoked)
        assert store.find_key(added.api_key) == revoked
        assert store.list_keys() == [revoked]

    def test_include_revoked_false_hides_revoked(self, store: Store) -> None:
        """list_keys(include_revoked=False) leaves revoked keys out, suspended ones in."""
        uid = master(store).uid
        k1, k2, k3 = (store.add_key(new_key(uid, f"K{n}")) for n in range(3))
        store.save_key(k1.with_changes(status=KeyStatus.REVOKED))
        store.save_key(k3.with_changes(status=KeyStatus.SUSPENDED))
        assert [k.id for k in store.list_keys(include_revoked=False)] == [k2.id, k3.id]


class TestRateOverrides:
    def test_key_and_account_overrides_round_trip(self, store: Store) -> None:
        """Per-key and per-account rate-limit overrides persist and read back equal."""
        account = master(store)
        limits = RateOverrides.parse("/v5/order/create:spot=50,/v5/account/wallet-balance=200")
        key = store.add_key(new_key(account.uid, rate_limits=limits))
        found = store.find_key(key.api_key)
        assert found is not None
        assert found.rate_limits == limits
        store.save_key(found.with_changes(rate_limits=RateOverrides()))
        cleared = store.find_key(key.api_key)
        assert cleared is not None
        assert cleared.rate_limits.limits == {}
        store.save_account(replace(account, rate_limits=limits))
        saved = store.find_account(account.uid)
        assert saved is not None
        assert saved.rate_limits.lookup("/v5/order/create", "spot") == 50

    def test_daily_quota_and_replay_guard_round_trip(self, store: Store) -> None:
        """daily_quota (None = no quota) and replay_guard (default off) persist and clear."""
        key = store.add_key(new_key(master(store).uid))
        fresh = store.find_key(key.api_key)
        assert fresh is not None
        assert (fresh.daily_quota, fresh.replay_guard) == (None, False)
        store.save_key(fresh.with_changes(daily_quota=5000, replay_guard=True))
        saved = store.find_key(key.api_key)
        assert saved is not None
        assert (saved.daily_quota, saved.replay_guard) == (5000, True)
        store.save_key(saved.with_changes(daily_quota=None, replay_guard=False))
        cleared = store.find_key(key.api_key)
        assert cleared is not None
        assert (cleared.daily_quota, cleared.replay_guard) == (None, False)


class TestListKeys:
    def test_filters_by_uid(self, store: Store) -> None:
        """list_keys(uid=...) gives only that account's keys, by id."""
        a, b = master(store), master(store)
        for n in range(4):
            store.add_key(new_key((a, b)[n % 2].uid, f"K{n}"))
        assert [k.api_key for k in store.list_keys(uid=a.uid)] == ["K0", "K2"]
        assert [k.api_key for k in store.list_keys(uid=b.uid)] == ["K1", "K3"]
        assert store.list_keys(uid=999) == []

    def test_paginates_with_after_id_and_limit(self, store: Store) -> None:
        """after_id + limit walk the keys in id order without gaps or repeats."""
        uid = master(store).uid
        for n in range(7):
            store.add_key(new_key(uid, f"K{n}"))
        pages: list[list[int]] = []
        after = 0
        while page := store.list_keys(after_id=after, limit=3):
            pages.append([k.id for k in page])
            after = page[-1].id
        assert pages == [[1, 2, 3], [4, 5, 6], [7]]

    def test_limit_combines_with_filters(self, store: Store) -> None:
        """limit counts only keys that pass the uid and revoked filters."""
        a, b = master(store), master(store)
        k1 = store.add_key(new_key(a.uid, "K1"))
        store.add_key(new_key(b.uid, "K2"))
        store.add_key(new_key(a.uid, "K3"))
        store.add_key(new_key(a.uid, "K4"))
        store.save_key(k1.with_changes(status=KeyStatus.REVOKED))
        keys = store.list_keys(uid=a.uid, include_revoked=False, limit=2)
        assert [k.api_key for k in keys] == ["K3", "K4"]

    def test_limit_zero_is_empty(self, store: Store) -> None:
        """limit=0 returns no keys."""
        store.add_key(new_key(master(store).uid))
        assert store.list_keys(limit=0) == []


class TestLastUsed:
    def test_never_moves_backwards(self, store: Store) -> None:
        """An earlier timestamp does not overwrite a later one."""
        uid = master(store).uid
        k1, k2 = store.add_key(new_key(uid, "K1")), store.add_key(new_key(uid, "K2"))
        store.record_last_used({k1.id: T0 + 50, k2.id: T0 + 10})
        store.record_last_used({k1.id: T0 + 20, k2.id: T0 + 30})
        assert [k.last_used_at_ms for k in store.list_keys()] == [T0 + 50, T0 + 30]

    def test_does_not_bump_revision(self, store: Store) -> None:
        """Recording use is not a key change: caches keyed on revision stay valid."""
        key = store.add_key(new_key(master(store).uid))
        revision = store.revision()
        store.record_last_used({key.id: T0 + 1})
        store.record_last_used({})
        assert store.revision() == revision

    def test_unknown_ids_are_ignored(self, store: Store) -> None:
        """Ids of keys that do not exist are skipped without error."""
        key = store.add_key(new_key(master(store).uid))
        store.record_last_used({key.id: T0 + 1, 9999: T0 + 2})
        assert store.list_keys()[0].last_used_at_ms == T0 + 1

    def test_save_key_does_not_move_it_backwards(self, store: Store) -> None:
        """A save with a stale last_used_at_ms (or None) keeps the later stored one."""
        added = store.add_key(new_key(master(store).uid))
        store.record_last_used({added.id: T0 + 100})
        store.save_key(added.with_changes(note="a", last_used_at_ms=T0 + 1))
        store.save_key(added.with_changes(note="b", last_used_at_ms=None))
        found = store.find_key(added.api_key)
        assert found is not None
        assert (found.note, found.last_used_at_ms) == ("b", T0 + 100)

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(batches=st.lists(st.integers(min_value=0, max_value=10**13), min_size=1, max_size=6))
    def test_ends_at_the_latest_of_any_sequence(self, store: Store, batches: list[int]) -> None:
        """Whatever order uses are recorded in, the key ends at the maximum."""
        if store.count_accounts() == 0:
            master(store)
        key = store.add_key(new_key(100001, f"K{store.revision()}"))
        for ms in batches:
            store.record_last_used({key.id: ms})
        found = store.find_key(key.api_key)
        assert found is not None
        assert found.last_used_at_ms == max(batches)


class TestRevision:
    def test_new_store_starts_at_zero(self, store: Store) -> None:
        """An empty store's revision is 0."""
        assert store.revision() == 0

    def test_every_mutation_increases_it(self, store: Store) -> None:
        """create/save of accounts and keys and add_key each raise the revision."""
        seen = [store.revision()]
        parent = master(store)
        seen.append(store.revision())
        sub = store.create_account(parent_uid=parent.uid, created_at_ms=T0)
        seen.append(store.revision())
        store.save_account(Account(sub.uid, parent.uid, T0, status=AccountStatus.FROZEN))
        seen.append(store.revision())
        key = store.add_key(new_key(sub.uid))
        seen.append(store.revision())
        store.save_key(key.with_changes(status=KeyStatus.REVOKED))
        seen.append(store.revision())
        assert seen == sorted(set(seen))
        assert len(seen) == 6

    def test_failed_mutations_leave_it(self, store: Store) -> None:
        """A mutation that raises does not change the revision."""
        uid = master(store).uid
        store.add_key(new_key(uid, "K"))
        before = store.revision()
        failures: list[Callable[[], object]] = [
            lambda: store.create_account(parent_uid=1, created_at_ms=T0),
            lambda: store.save_account(Account(1, None, T0)),
            lambda: store.add_key(new_key(uid, "K")),
            lambda: store.add_key(new_key(1, "K2")),
            lambda: store.save_key(new_key(uid, id=42)),
        ]
        for fail in failures:
            with pytest.raises((NotFoundError, ValueError)):
                fail()
        assert store.revision() == before


class TestConcurrency:
    def test_parallel_writers_get_distinct_ids(self, store: Store) -> None:
        """Threads creating accounts and keys at once get distinct, gap-free uids and ids."""

        def work(n: int) -> tuple[int, int]:
            account = store.create_account(parent_uid=None, created_at_ms=T0)
            return account.uid, store.add_key(new_key(account.uid, f"T{n}")).id

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(work, range(16)))
        assert sorted(uid for uid, _ in results) == list(range(100001, 100017))
        assert sorted(key_id for _, key_id in results) == list(range(1, 17))
        assert store.revision() == 32


class TestSharedDatabase:
    def test_two_stores_see_each_others_writes(self, sql_url: str) -> None:
        """A second SqlStore on the same database sees the first one's accounts and keys."""
        first, second = open_store(sql_url), open_store(sql_url)
        try:
            uid = first.create_account(parent_uid=None, created_at_ms=T0).uid
            key = second.add_key(new_key(uid))
            assert second.find_account(uid) is not None
            assert first.find_key(key.api_key) == key
            assert second.create_account(parent_uid=None, created_at_ms=T0).uid == uid + 1
        finally:
            first.close()
            second.close()

    def test_two_stores_writing_at_once_never_collide(self, sql_url: str) -> None:
        """Writers on separate engines (as separate nodes) serialise: distinct uids, no errors."""
        stores = [open_store(sql_url), open_store(sql_url)]
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                uids = list(
                    pool.map(
                        lambda n: stores[n % 2].create_account(parent_uid=None, created_at_ms=T0),
                        range(20),
                    )
                )
            assert sorted(a.uid for a in uids) == list(range(100001, 100021))
            assert stores[0].revision() == stores[1].revision() == 20
        finally:
            for made in stores:
                made.close()

    def test_revocation_is_noticed_through_the_revision(self, sql_url: str) -> None:
        """A revocation written by one store raises the revision another store polls."""
        node, cli = open_store(sql_url), open_store(sql_url)
        try:
            key = node.add_key(new_key(node.create_account(parent_uid=None, created_at_ms=T0).uid))
            seen = node.revision()
            assert cli.revision() == seen
            cli.save_key(key.with_changes(status=KeyStatus.REVOKED, revoked_at_ms=T0 + 1))
            assert node.revision() > seen
            found = node.find_key(key.api_key)
            assert found is not None
            assert found.status is KeyStatus.REVOKED
        finally:
            node.close()
            cli.close()

    def test_reopening_keeps_data(self, sql_url: str) -> None:
        """Opening (and migrating) an existing database again keeps its rows and revision."""
        first = open_store(sql_url)
        uid = first.create_account(parent_uid=None, created_at_ms=T0).uid
        revision = first.revision()
        first.close()
        again = open_store(sql_url)
        try:
            assert again.find_account(uid) is not None
            assert again.revision() == revision
        finally:
            again.close()


class TestOpenStore:
    def test_url_for_display_hides_the_password(self) -> None:
        """Passwords in the userinfo or the query never reach url_for_display."""
        assert display_url("postgresql+psycopg://kp:s3cret@db:5432/kp") == (
            "postgresql+psycopg://kp:***@db:5432/kp"
        )
        assert "s3cret" not in display_url("postgresql+psycopg://kp@db/kp?password=s3cret")

    def test_plain_postgresql_url_uses_psycopg(self) -> None:
        """postgresql:// and postgres:// URLs are driven by psycopg 3."""
        for url in ("postgresql://u@h/db", "postgres://u@h/db"):
            assert normalize_url(url).drivername == "postgresql+psycopg"

    def test_sqlite_parent_directory_is_created(self, tmp_path: Any) -> None:
        """open_store creates the SQLite file's directory and uses WAL and foreign keys."""
        path = tmp_path / "a" / "b" / "keyplane.db"
        store = open_store(f"sqlite:///{path}")
        try:
            assert path.exists()
            assert isinstance(store, SqlStore)
            assert "***" not in store.url_for_display
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        finally:
            store.close()

    def test_migrate_false_leaves_database_empty(self, tmp_path: Any) -> None:
        """open_store(migrate=False) does not create tables."""
        store = open_store(f"sqlite:///{tmp_path / 'x.db'}", migrate=False)
        try:
            with store.engine.connect() as conn:
                tables = conn.exec_driver_sql("SELECT name FROM sqlite_master").all()
            assert tables == []
        finally:
            store.close()
