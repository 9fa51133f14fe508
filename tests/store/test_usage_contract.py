"""The usage-log part of the Store contract: memory, SQLite and PostgreSQL agree."""

from __future__ import annotations

import random

import pytest

from keyplane.store import Store
from keyplane.usage import UsageEvent, UsageSummaryRow

from .test_store_contract import T0


def usage(row_id: str, **changes: object) -> UsageEvent:
    """A successful wallet-balance request by key AAA (id 1, uid 100001), 1500 µs."""
    base = UsageEvent(
        at_ms=T0,
        api_key="AAA",
        key_id=1,
        uid=100001,
        method="GET",
        path="/v5/account/wallet-balance",
        http_status=200,
        ret_code=0,
        request_bytes=0,
        response_bytes=321,
        latency_us=1500,
        client_ip="127.0.0.1",
        authenticated=True,
        row_id=row_id,
    )
    return base._replace(**changes)


def _rows() -> list[UsageEvent]:
    return [
        usage("n-1"),
        usage("n-2", latency_us=500),
        usage("n-3", method="POST", path="/v5/order/create", request_bytes=90, at_ms=T0 + 10),
        usage("n-4", ret_code=10004, authenticated=False, at_ms=T0 + 20, latency_us=100),
        usage("n-5", api_key="BBB", key_id=None, uid=None, ret_code=10003, authenticated=False),
        usage("n-6", http_status=403, ret_code=10006, at_ms=T0 + 30, latency_us=7),
    ]


class TestUsageLog:
    def test_append_counts_new_rows_and_skips_known_row_ids(self, store: Store) -> None:
        """A replayed batch stores nothing twice: the second append reports 0 new rows."""
        assert store.append_usage(_rows()) == 6
        assert store.append_usage([*_rows()[:3], usage("n-7")]) == 1
        assert store.append_usage([]) == 0
        total = sum(r.requests for r in store.usage_summary())
        assert total == 7

    def test_empty_row_id_is_refused(self, store: Store) -> None:
        """Rows without a row_id cannot be made idempotent, so they are refused whole."""
        with pytest.raises(ValueError, match="row_id"):
            store.append_usage([usage("ok"), usage("")])
        assert store.usage_summary() == []

    def test_summary_by_endpoint(self, store: Store) -> None:
        """Groups "METHOD /path" with requests, errors, average (floor) and max latency in µs."""
        store.append_usage(_rows())
        assert list(store.usage_summary(by="endpoint")) == [
            # latencies 7, 100, 500, 1500, 1500: p50 is the 3rd, p99 the 5th (nearest rank)
            UsageSummaryRow(
                "GET /v5/account/wallet-balance",
                5,
                3,
                (1500 * 2 + 500 + 100 + 7) // 5,
                1500,
                500,
                1500,
            ),
            UsageSummaryRow("POST /v5/order/create", 1, 0, 1500, 1500, 1500, 1500),
        ]

    def test_summary_by_status(self, store: Store) -> None:
        """Groups "<http status>/<retCode>"."""
        store.append_usage(_rows())
        assert list(store.usage_summary(by="status")) == [
            UsageSummaryRow("200/0", 3, 0, (1500 + 500 + 1500) // 3, 1500, 1500, 1500),
            UsageSummaryRow("200/10003", 1, 1, 1500, 1500, 1500, 1500),
            UsageSummaryRow("200/10004", 1, 1, 100, 100, 100, 100),
            UsageSummaryRow("403/10006", 1, 1, 7, 7, 7, 7),
        ]

    def test_percentiles_are_nearest_rank_per_group(self, store: Store) -> None:
        """Over latencies 1..200 µs: p50 is 100 µs and p99 198 µs (the 100th and 198th)."""
        rows = [
            usage(f"r{i}", latency_us=latency)
            for i, latency in enumerate(random.Random(5).sample(range(1, 201), 200))
        ]
        store.append_usage(rows)
        [summary] = store.usage_summary()
        assert (summary.p50_latency_us, summary.p99_latency_us) == (100, 198)
        assert (summary.avg_latency_us, summary.max_latency_us) == (100, 200)

    def test_summary_filters_by_api_key_and_since(self, store: Store) -> None:
        """api_key keeps one key's rows; since_ms keeps rows at or after it (ms)."""
        store.append_usage(_rows())
        only_b = store.usage_summary(api_key="BBB")
        assert [(r.group, r.requests) for r in only_b] == [("GET /v5/account/wallet-balance", 1)]
        recent = store.usage_summary(api_key="AAA", since_ms=T0 + 10, by="status")
        assert [(r.group, r.requests) for r in recent] == [
            ("200/0", 1),
            ("200/10004", 1),
            ("403/10006", 1),
        ]
        assert store.usage_summary(api_key="nobody") == []

    def test_texts_with_copy_specials_come_back_as_sent(self, store: Store) -> None:
        """Tabs, newlines, carriage returns, backslashes and a literal \\N in the texts (an api
        key is whatever the client sent) are stored unchanged, whether the batch was prepared
        in pieces (prepare_usage onto an earlier result, as the usage writer does) or not."""
        odd_keys = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "ключ€"]
        rows = [
            usage(f"odd-{i}", api_key=k, client_ip="10.0.0.1\\x") for i, k in enumerate(odd_keys)
        ]
        prepared = store.prepare_usage(rows[:3])
        prepared = store.prepare_usage(rows[3:], onto=prepared)
        assert list(prepared) == rows
        assert store.append_usage(prepared) == len(rows)
        refused = usage("odd-null", api_key="\\N", key_id=None, uid=None, path="/v5/\tx")
        assert store.append_usage([refused._replace(ret_code=10003, authenticated=False)]) == 1
        for k in odd_keys:
            assert store.count_usage(api_key=k, since_ms=T0) == 1, k
        groups = {r.group: r.requests for r in store.usage_summary()}
        assert groups == {"GET /v5/account/wallet-balance": 6, "GET /v5/\tx": 1}

    def test_a_nul_character_does_not_sink_the_batch(
        self, store: Store, db_url: str | None
    ) -> None:
        """PostgreSQL text cannot hold NUL: the NUL is dropped and the row stored with the rest
        of its batch (a batch that failed would be spilled and replayed forever)."""
        if db_url is None or not db_url.startswith("postgresql"):
            pytest.skip("only PostgreSQL text refuses NUL")
        rows = [usage("nul-1", api_key="nul\x00key"), usage("nul-2")]
        assert store.append_usage(rows) == 2
        assert store.count_usage(api_key="nulkey", since_ms=T0) == 1

    def test_sql_stores_cut_texts_to_their_columns(self, store: Store, db_url: str | None) -> None:
        """An api key longer than its 64-character column is stored cut, not refused (the
        whole batch would fail); so are method, path and client IP."""
        if db_url is None:
            pytest.skip("the memory store has no column widths")
        long_key, long_ip = "K" * 70, "1" * 70
        row = usage("long-1", api_key=long_key, client_ip=long_ip, path="/v5/" + "p" * 300)
        assert store.append_usage([row, usage("long-2")]) == 2
        assert store.count_usage(api_key=long_key[:64], since_ms=T0) == 1
        groups = {r.group for r in store.usage_summary()}
        assert "GET /v5/" + "p" * 251 in groups

    def test_unknown_grouping_is_refused(self, store: Store) -> None:
        """Only endpoint and status are groupings."""
        with pytest.raises(ValueError, match="endpoint or status"):
            store.usage_summary(by="ip")  # type: ignore[arg-type]

    def test_usage_does_not_bump_the_revision(self, store: Store) -> None:
        """Usage writes never invalidate key caches."""
        before = store.revision()
        store.append_usage(_rows())
        assert store.revision() == before


class TestUsagePurge:
    def test_rows_before_the_cutoff_go_the_rest_stay(self, store: Store) -> None:
        """purge_usage(before_ms) deletes at_ms < before_ms and counts them; a replay of a
        purged row_id is stored again (the id is free)."""
        store.append_usage([usage(f"p-{i}", at_ms=T0 + i) for i in range(5)])
        assert store.purge_usage(before_ms=T0 + 3) == 3
        assert store.purge_usage(before_ms=T0 + 3) == 0
        [summary] = store.usage_summary()
        assert summary.requests == 2
        assert store.append_usage([usage("p-0", at_ms=T0 + 9)]) == 1


class TestCountUsage:
    def test_counts_authenticated_successes_of_one_key_since(self, store: Store) -> None:
        """count_usage: key AAA's rows at or after since_ms with retCode 0 and a verified
        signature (what a daily quota counts); refusals and other keys are not counted."""
        store.append_usage(
            [*_rows(), usage("n-7", key_id=2, api_key="CCC"), usage("n-8", at_ms=T0 - 1)]
        )
        assert store.count_usage(api_key="AAA", since_ms=T0) == 3
        assert store.count_usage(api_key="AAA", since_ms=T0 - 1) == 4
        assert store.count_usage(api_key="AAA", since_ms=T0 + 11) == 0
        assert store.count_usage(api_key="CCC", since_ms=T0) == 1
        assert store.count_usage(api_key="ZZZ", since_ms=0) == 0


class TestCountFailures:
    def test_counts_other_nodes_failed_proofs_per_key(self, store: Store) -> None:
        """Rows of the asked keys, since the cutoff, with the asked retCodes and a known key,
        not written by the excluded node (row_id prefix "<node>-"); LIKE wildcards in a node
        id match only themselves."""
        store.append_usage(
            [
                usage("nodeb-1", ret_code=10004),
                usage("nodeb-2", ret_code=10002, at_ms=T0 + 5),
                usage("nodeb-3", ret_code=10004, at_ms=T0 - 1),  # before the cutoff
                usage("nodeb-4", ret_code=10005),  # not a failed proof
                usage("nodeb-5", ret_code=10004, key_id=None),  # unknown key
                usage("node_-1", ret_code=10004),  # this node (wildcard in the id)
                usage("nodea-1", ret_code=10004),  # another node ("_" must not match "a")
                usage("nodeb-6", ret_code=10004, api_key="BBB"),
                usage("nodeb-7", ret_code=10004, api_key="CCC"),
            ]
        )
        counts = store.count_failures(
            ["AAA", "BBB", "DDD"], since_ms=T0, ret_codes=(10002, 10004), excluding_node="node_"
        )
        assert counts == {"AAA": 3, "BBB": 1}
        assert store.count_failures([], since_ms=T0, ret_codes=(10004,), excluding_node="x") == {}
