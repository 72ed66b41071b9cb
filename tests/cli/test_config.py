from __future__ import annotations

from pathlib import Path

import pytest

import conveyor
from conveyor.cli.config import ConfigError, apply_queues, apply_topics, load_config, parse_config
from conveyor.cli.output import parse_seconds
from tests.cli.conftest import Cli, assert_one_error_line

FULL = """
url = "sqlite:///x.db"
app = "myapp.main:app"

[[queues]]
name = "jobs"
delivery_delay = 5
retention_seconds = 86400
dedup_window_seconds = 60

[[consumers]]
queue = "jobs"
handler = "handlers:handle"
max_batch_size = 50
max_batch_timeout = 1
max_retries = 0
retry_delay = 2.5
dead_letter_queue = "jobs-dlq"
max_concurrency = 4
visibility_timeout = 60
max_rate = "100/s"
max_rate_scope = "global"
timeout = 30
retry_backoff = "fixed"
retry_backoff_base = 2
retry_backoff_cap = 600

[[topics]]
name = "orders"
subscriptions = [{ queue = "kitchen", types = ["ORDER_UP"] }, { queue = "audit" }]

[metrics]
port = 9464
host = "0.0.0.0"
"""


def test_every_key_is_read() -> None:
    config = parse_config(FULL)
    assert (config.url, config.app) == ("sqlite:///x.db", "myapp.main:app")
    [queue] = config.queues
    assert (queue.name, queue.delivery_delay, queue.retention_seconds) == ("jobs", 5.0, 86_400.0)
    assert queue.dedup_window_seconds == 60.0
    [consumer] = config.consumers
    assert consumer.model_dump() == {
        "queue": "jobs",
        "handler": "handlers:handle",
        "max_batch_size": 50,
        "max_batch_timeout": 1.0,
        "max_retries": 0,
        "retry_delay": 2.5,
        "dead_letter_queue": "jobs-dlq",
        "max_concurrency": 4,
        "visibility_timeout": 60.0,
        "max_rate": "100/s",
        "max_rate_scope": "global",
        "timeout": 30.0,
        "retry_backoff": "fixed",
        "retry_backoff_base": 2.0,
        "retry_backoff_cap": 600.0,
    }
    [topic] = config.topics
    assert topic.name == "orders"
    assert [(s.queue, s.types) for s in topic.subscriptions] == [("kitchen", ["ORDER_UP"]), ("audit", None)]
    assert config.queue_names() == ["audit", "jobs", "jobs-dlq", "kitchen"]
    assert (config.metrics.port, config.metrics.host) == (9464, "0.0.0.0")


def test_defaults_are_the_documented_ones() -> None:
    config = parse_config('[[consumers]]\nqueue = "q"\nhandler = "h:f"\n')
    [consumer] = config.consumers
    assert (consumer.max_batch_size, consumer.max_batch_timeout, consumer.max_retries) == (10, 5.0, 3)
    assert (consumer.dead_letter_queue, consumer.max_concurrency) == (None, None)
    assert config.url is None and config.queues == []
    assert (config.metrics.port, config.metrics.host) == (None, "127.0.0.1")  # no metrics endpoint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_batch_size = 101\n',
            "conveyor.toml: consumers[0].max_batch_size: Input should be less than or equal to 100",
        ),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_batchsize = 5\n',
            "conveyor.toml: consumers[0].max_batchsize: unknown key 'max_batchsize' — did you mean "
            "'max_batch_size'?",
        ),
        ('urls = "x"\n', "conveyor.toml: urls: unknown key 'urls' — did you mean 'url'?"),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_retires = 1\n',
            "consumers[0].max_retires: unknown key 'max_retires' — did you mean 'max_retries'?",
        ),
        ('[[queues]]\nname = "q"\ncolour = 1\n', "queues[0].colour: unknown key 'colour' (known keys: name,"),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_batch_timeout = "soon"\n',
            "consumers[0].max_batch_timeout: 'soon' is not a duration",
        ),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_batch_timeout = "2m"\n',
            "consumers[0].max_batch_timeout: Input should be less than or equal to 60",
        ),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_retries = "3"\n',
            "conveyor.toml: consumers[0].max_retries: Input should be a valid integer",
        ),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "handle"\n',
            "consumers[0].handler: expected 'module:attribute'",
        ),
        ('[[queues]]\nname = "a b"\n', "conveyor.toml: queues[0].name: invalid queue name 'a b'"),
        (
            '[[topics]]\nname = "t"\nsubscriptions = []\n',
            "topics[0].subscriptions: List should have at least 1 item",
        ),
        (
            '[[topics]]\nname = "t"\nsubscriptions = [{ queue = "q", types = [] }]\n',
            "topics[0].subscriptions[0].types: List should have at least 1 item",
        ),
        (
            '[[topics]]\nname = "t"\nsubscriptions = [{ queue = "q" }, { queue = "q" }]\n',
            "topics[0]: topic 't' subscribes 'q' more than once",
        ),
        (
            '[[topics]]\nname = "t"\nsubscriptions = [{ queue = "q" }]\n' * 2,
            "topics: 't' declared more than once",
        ),
        ('[[queues]]\nname = "q"\nretention_seconds = 10\n', "queues[0].retention_seconds: Input should be"),
        ('[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_rate = "fast"\n', "consumers[0].max_rate: "),
        (
            '[[queues]]\nname = "q"\ndedup_window_seconds = -1\n',
            "queues[0].dedup_window_seconds: Input should be",
        ),
        (
            '[[consumers]]\nqueue = "q"\nhandler = "h:f"\ndead_letter_queue = "q"\n',
            "consumers[0]: queue 'q' cannot be its own dead_letter_queue",
        ),
        ('[[queues]]\nname = "q"\n[[queues]]\nname = "q"\n', "queues: 'q' declared more than once"),
        ('[[consumers]]\nhandler = "h:f"\n', "consumers[0].queue: Field required"),
        ("url = \n", "conveyor.toml: not valid TOML"),
        (
            "[metrics]\nport = 65536\n",
            "conveyor.toml: metrics.port: Input should be less than or equal to 65535",
        ),
        ('[metrics]\nport = "9464"\n', "conveyor.toml: metrics.port: Input should be a valid integer"),
    ],
)
def test_errors_name_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert message in str(raised.value)
    assert raised.value.code == "invalid_config"


def test_durations_are_read_as_the_command_line_reads_them() -> None:
    config = parse_config(
        '[[queues]]\nname = "q"\ndelivery_delay = "30s"\nretention_seconds = "2d"\n'
        '[[consumers]]\nqueue = "q"\nhandler = "h:f"\nmax_batch_timeout = "1s"\nretry_delay = "5m"\n'
        'visibility_timeout = "1.5h"\n'
    )
    [queue] = config.queues
    [consumer] = config.consumers
    assert (queue.delivery_delay, queue.retention_seconds) == (30.0, 172_800.0)
    assert (consumer.max_batch_timeout, consumer.retry_delay, consumer.visibility_timeout) == (
        1.0,
        300.0,
        5400.0,
    )
    assert parse_seconds("1s") == consumer.max_batch_timeout  # one parser for both


def test_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "conveyor.toml"
    path.write_text("[[queues]]\nnme = 'x'\n")
    with pytest.raises(ConfigError, match=r"conveyor\.toml: queues\[0\]\.name: Field required"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_a_bad_key_fails_a_command_with_one_line(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(
        "[[consumers]]\nqueue = 'q'\nhandler = 'h:f'\nmax_batch_size = 500\n"
    )
    result = cli("queues", "list", url=False)
    assert_one_error_line(
        result,
        "conveyor.toml: consumers[0].max_batch_size: Input should be less than or equal to 100",
        "[invalid_config]",
    )


def test_url_comes_from_conveyor_toml(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "conveyor.toml").write_text(f'url = "{cli.url}"\n')
    cli.ok("queues", "create", "from-flag")  # with --url
    assert [q["name"] for q in cli.json("queues", "list")] == ["from-flag"]
    listed = cli("--json", "queues", "list", url=False)
    assert listed.exit_code == 0, listed.output
    assert "from-flag" in listed.stdout


def test_explicit_config_path_must_exist(cli: Cli) -> None:
    assert_one_error_line(
        cli("--config", "other.toml", "queues", "list", url=False), "other.toml: no such file"
    )


async def test_applying_topics_subscribes_updates_filters_and_is_idempotent() -> None:
    text = (
        '[[topics]]\nname = "orders"\n'
        'subscriptions = [{ queue = "kitchen", types = ["ORDER_UP"] }, { queue = "audit" }]\n'
    )
    async with conveyor.App("memory://", auto_create=False) as app:
        await app.create_queue("kitchen")
        await app.create_queue("old")
        await app.subscribe("orders", queue="kitchen", types=["PAID"])  # a filter the file changes
        await app.subscribe("orders", queue="old", types=None)  # not in the file: left alone
        assert await apply_topics(app, parse_config(text)) == ["orders -> kitchen", "orders -> audit"]
        assert await apply_topics(app, parse_config(text)) == []
        subscriptions = {s.queue: s.types for s in await app.list_subscriptions("orders")}
    assert subscriptions == {"kitchen": ("ORDER_UP",), "audit": None, "old": None}


async def test_a_queues_pull_consumer_is_applied_changed_and_removed_as_the_file_says() -> None:
    text = (
        '[[queues]]\nname = "jobs"\n[queues.pull_consumer]\nbatch_size = 20\nmax_retries = 2\n'
        'retry_delay = "30s"\nvisibility_timeout = "2m"\ndead_letter_queue = "jobs-dlq"\n'
    )
    async with conveyor.App("memory://", auto_create=False) as app:
        assert await apply_queues(app, parse_config(text)) == ["jobs"]
        wanted = conveyor.PullConsumer(20, 2, 30.0, 120.0, "jobs-dlq")
        assert (await app.get_queue("jobs")).settings.pull_consumer == wanted
        assert (await app.get_queue("jobs-dlq")).name == "jobs-dlq"
        assert await apply_queues(app, parse_config(text)) == []  # idempotent
        changed = text.replace("max_retries = 2", "max_retries = 5")
        assert await apply_queues(app, parse_config(changed)) == ["jobs"]
        assert (await app.get_queue("jobs")).settings.pull_consumer == conveyor.PullConsumer(
            20, 5, 30.0, 120.0, "jobs-dlq"
        )
        # declared without one: the queue has none
        assert await apply_queues(app, parse_config('[[queues]]\nname = "jobs"\n')) == ["jobs"]
        assert (await app.get_queue("jobs")).settings.pull_consumer is None


def test_a_bad_pull_consumer_key_names_it() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config('[[queues]]\nname = "q"\n[queues.pull_consumer]\nmax_retries = 101\n')
    assert "queues[0].pull_consumer.max_retries" in str(raised.value)
