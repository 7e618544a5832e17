import pytest

from herald.core.errors import ConfigError
from herald.core.settings import Settings

CLUSTER = {
    "HERALD_MONGO_URL": "mongodb://127.0.0.1:27017",
    "HERALD_REDIS_URL": "redis://127.0.0.1:6379/0",
    "HERALD_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "HERALD_ADMIN_TOKEN": "admin-" + "a" * 32,
    "HERALD_SERVICE_TOKEN": "service-" + "s" * 32,
}


def test_each_service_has_its_default_port() -> None:
    ports = {role: Settings.from_env(role, CLUSTER).port for role in ("auth", "collect", "dispatch", "push")}
    assert ports == {"auth": 8001, "collect": 8002, "dispatch": 8003, "push": 8004}


def test_the_push_node_id_defaults_to_host_and_port() -> None:
    settings = Settings.from_env("push", {**CLUSTER, "HERALD_PORT": "9100"})
    assert settings.node_id == "127.0.0.1:9100"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HERALD_PORT", "eighty"),
        ("HERALD_PORT", "70000"),
        ("HERALD_NAMESPACE", "Has-Dashes"),
        ("HERALD_HEARTBEAT_S", "soon"),
        ("HERALD_LOG_LEVEL", "LOUD"),
        ("HERALD_AMQP_URL", "http://rabbit"),
        ("HERALD_AMQP_URL", "amqp://a:5672/,http://b"),
        ("HERALD_AMQP_URL", "amqp://a:5672/,,amqp://b:5672/"),
        ("HERALD_NODE_ID", "a node"),
        ("HERALD_QUEUE_TYPE", "mirrored"),
        ("HERALD_DELIVERY_LIMIT", "0"),
        ("HERALD_REDIS_MODE", "replicated"),
        ("HERALD_REDIS_SENTINELS", "sentinel-without-port"),
        ("HERALD_WEBHOOK_BLOCK_PRIVATE", "yes"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env("push", {**CLUSTER, name: value})
    assert name in info.value.message


def test_a_cluster_service_without_its_servers_is_refused() -> None:
    env = {k: v for k, v in CLUSTER.items() if k != "HERALD_AMQP_URL"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env("dispatch", env)
    assert "HERALD_AMQP_URL" in info.value.message


def test_standalone_needs_no_server() -> None:
    settings = Settings.from_env("standalone", {})
    assert settings.embedded and settings.mongo_url is None


def test_settings_are_frozen() -> None:
    settings = Settings.from_env("standalone", {})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_several_rabbitmq_nodes_are_tried_in_the_order_given() -> None:
    settings = Settings.from_env("dispatch", {**CLUSTER, "HERALD_AMQP_URL": "amqp://a:5672/, amqp://b:5672/"})
    assert settings.amqp_urls == ("amqp://a:5672/", "amqp://b:5672/")


def test_work_queues_are_quorum_queues_unless_told_otherwise() -> None:
    assert Settings.from_env("dispatch", CLUSTER).queue_type == "quorum"
    assert Settings.from_env("dispatch", {**CLUSTER, "HERALD_QUEUE_TYPE": "Classic"}).queue_type == "classic"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HERALD_REDIS_MODE": "sentinel", "HERALD_REDIS_MASTER": "m"}, "HERALD_REDIS_SENTINELS"),
        ({"HERALD_REDIS_MODE": "sentinel", "HERALD_REDIS_SENTINELS": "s:26379"}, "HERALD_REDIS_MASTER"),
        ({"HERALD_REDIS_MODE": "cluster", "HERALD_REDIS_URL": ""}, "HERALD_REDIS_URL"),
    ],
)
def test_a_redis_mode_without_what_it_needs_stops_start_up(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env("push", {**CLUSTER, **env})
    assert named in info.value.message


def test_sentinel_mode_finds_redis_without_a_url() -> None:
    env = {k: v for k, v in CLUSTER.items() if k != "HERALD_REDIS_URL"}
    settings = Settings.from_env(
        "push",
        {
            **env,
            "HERALD_REDIS_MODE": "sentinel",
            "HERALD_REDIS_SENTINELS": "s1:26379,[::1]:26380",
            "HERALD_REDIS_MASTER": "m",
        },
    )
    assert settings.uses_redis and settings.redis_sentinels == (("s1", 26379), ("::1", 26380))
