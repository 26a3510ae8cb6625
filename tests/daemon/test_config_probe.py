"""The config loader's user-reported problems: the default rules directory, missing ``rules:``/``plugins:``
paths, ``http.listen`` and ``qmp`` addresses, and ``${NAME}`` values for keys that want a number."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from reactor.daemon.config import Config, load_config, parse_config
from reactor.daemon.daemon import Daemon
from reactor.daemon.reload import prepare, watched_paths
from reactor.errors import LoadError
from reactor.model.catalog import default_catalog


def rule(name: str) -> str:
    return f"rules:\n  - name: {name}\n    on: STOP\n    actions:\n      - log: stopped\n"


def errors(text: str, path: str | Path = "/etc/reactor/reactor.yaml", env: Mapping[str, str] | None = None,
           ) -> list[str]:
    with pytest.raises(LoadError) as info:
        parse_config(text, path, env=env or {})
    return [str(e) for e in info.value.errors]


def config_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "etc").mkdir(exist_ok=True)
    cfg = tmp_path / "etc" / "reactor.yaml"
    cfg.write_text(text)
    return cfg


# -- 1. rules: defaults to rules/ next to the config; a missing one is reported where the config says it --------

def test_without_rules_key_the_rules_are_next_to_the_config_not_in_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_file(tmp_path, "vms: []\n")
    (tmp_path / "etc" / "rules").mkdir()
    (tmp_path / "etc" / "rules" / "a.yaml").write_text(rule("next-to-config"))
    cwd = tmp_path / "elsewhere"
    (cwd / "rules").mkdir(parents=True)
    (cwd / "rules" / "b.yaml").write_text(rule("in-the-cwd"))
    monkeypatch.chdir(cwd)
    config = load_config(cfg)
    assert config.rules == (tmp_path / "etc" / "rules",)
    assert [r.name for r in Daemon(config, watch=False).rules.rules] == ["next-to-config"]
    assert [r.name for r in prepare(config, default_catalog()).rules.rules] == ["next-to-config"]
    assert tmp_path / "etc" / "rules" in watched_paths(config)


def test_a_config_built_in_code_carries_the_default_too(tmp_path: Path) -> None:
    assert Config(path=tmp_path / "reactor.yaml").rules == (tmp_path.resolve() / "rules",)
    assert Config(path=None).rules == (Path("rules"),)
    assert Config(path=None, rules=(tmp_path,)).rules == (tmp_path,)


def test_a_missing_rules_directory_is_reported_at_the_configs_rules_value(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "state_dir: st\nrules: [nosuchdir/, rules/]\n")
    (tmp_path / "etc" / "rules").mkdir()
    (tmp_path / "etc" / "rules" / "bad.yaml").write_text(rule("bad").replace("STOP", "STPO"))
    missing = f"{cfg}:2:9: rules: no such rules file or directory: {tmp_path / 'etc' / 'nosuchdir'}"
    with pytest.raises(LoadError) as info:
        Daemon(load_config(cfg), watch=False)
    got = [str(e) for e in info.value.errors]
    assert got[0] == missing
    assert len(got) == 2 and got[1].startswith(f"{tmp_path / 'etc' / 'rules' / 'bad.yaml'}:")  # and the rest
    with pytest.raises(LoadError) as info:             # a reload says the same
        prepare(load_config(cfg), default_catalog())
    assert str(info.value.errors[0]) == missing


def test_a_missing_default_rules_directory_is_still_an_error(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "vms: []\n")
    with pytest.raises(LoadError) as info:
        Daemon(load_config(cfg), watch=False)
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'etc' / 'rules'}:1:1: no such rules file or directory"]


# -- 2. http.listen is HOST:PORT, checked when the config loads ---------------------------------------------------

def test_http_listen_port_out_of_range_is_an_error_at_its_value() -> None:
    assert errors('http: {listen: "127.0.0.1:99999"}\n') == [
        "/etc/reactor/reactor.yaml:1:16: http.listen: port 99999 is not between 1 and 65535"]
    assert errors("http:\n  listen: 127.0.0.1:0\n") == [
        "/etc/reactor/reactor.yaml:2:11: http.listen: port 0 is not between 1 and 65535"]


def test_http_listen_that_is_not_host_port_says_so_and_asks_for_no_token() -> None:
    for bad in ("notanaddr", "127.0.0.1:http", ":9187", "127.0.0.1:"):
        got = errors(f'http: {{listen: "{bad}"}}\n')
        assert got == [f"/etc/reactor/reactor.yaml:1:16: http.listen: {bad!r} is not HOST:PORT "
                       "(like 127.0.0.1:9187 or [::1]:9187)"], bad


def test_http_listen_valid_addresses_and_the_loopback_rule_stay() -> None:
    for ok in ("127.0.0.1:9187", "[::1]:1", "localhost:65535"):
        http = parse_config(f'http: {{listen: "{ok}"}}\n', "/x/c.yaml", env={}).http
        assert http is not None and http.listen == ok
    assert errors('http: {listen: "10.0.0.1:80"}\n') == [
        "/etc/reactor/reactor.yaml:1:1: http.listen '10.0.0.1:80' is not a loopback address: "
        "set http.token to allow it"]
    http = parse_config('http: {listen: "10.0.0.1:80", token: s3cret}\n', "/x/c.yaml", env={}).http
    assert http is not None and http.listen == "10.0.0.1:80"


# -- 3. qmp: HOST:PORT ports, and HOST:notaport is not silently a socket path ---------------------------------

def test_vm_qmp_port_out_of_range_is_an_error_at_its_value() -> None:
    assert errors('vms:\n  - {name: a, qmp: "127.0.0.1:99999"}\n  - {name: b, qmp: "h:0"}\n') == [
        "/etc/reactor/reactor.yaml:2:20: vms.qmp: port 99999 is not between 1 and 65535",
        "/etc/reactor/reactor.yaml:3:20: vms.qmp: port 0 is not between 1 and 65535"]
    assert errors('listen: ["127.0.0.1:70000"]\n') == [
        "/etc/reactor/reactor.yaml:1:10: listen: port 70000 is not between 1 and 65535"]


def test_host_colon_non_numeric_port_is_an_error_suggesting_a_path() -> None:
    assert errors('vms:\n  - {name: a, qmp: "host:notaport"}\n') == [
        "/etc/reactor/reactor.yaml:2:20: vms.qmp: 'host:notaport' is not HOST:PORT (like 127.0.0.1:9187 or "
        "[::1]:9187), nor a path (write ./host:notaport for a socket file of that name)"]


def test_qmp_paths_and_valid_addresses() -> None:
    cfg = parse_config('vms:\n  - {name: a, qmp: "./host:notaport"}\n  - {name: b, qmp: "[::1]:4444"}\n'
                       '  - {name: c, qmp: vm.qmp}\n  - {name: d, qmp: "10.1.2.3:65535"}\n'
                       '  - {name: e, qmp: /run/q/x:1}\n', "/etc/reactor/reactor.yaml", env={})
    assert [v.qmp for v in cfg.vms] == ["/etc/reactor/host:notaport", "[::1]:4444", "/etc/reactor/vm.qmp",
                                        "10.1.2.3:65535", "/run/q/x:1"]


# -- 4. a missing plugins directory is reported where the config names it ----------------------------------------

def test_a_missing_plugins_directory_is_reported_at_the_configs_value(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "plugins:\n  - noplugins/\n")
    (tmp_path / "etc" / "rules").mkdir()
    want = [f"{cfg}:2:5: plugins: no such directory: {tmp_path / 'etc' / 'noplugins'}"]
    with pytest.raises(LoadError) as info:
        Daemon(load_config(cfg), watch=False)
    assert [str(e) for e in info.value.errors] == want
    with pytest.raises(LoadError) as info:
        prepare(load_config(cfg), default_catalog())
    assert [str(e) for e in info.value.errors] == want
    (tmp_path / "etc" / "noplugins").write_text("")
    with pytest.raises(LoadError) as info:
        Daemon(load_config(cfg), watch=False)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg}:2:5: plugins: not a directory: {tmp_path / 'etc' / 'noplugins'}"]


def test_an_existing_plugins_directory_loads(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "plugins: [plugins/]\n")
    (tmp_path / "etc" / "plugins").mkdir()
    (tmp_path / "etc" / "rules").mkdir()
    (tmp_path / "etc" / "rules" / "a.yaml").write_text(rule("a"))
    assert [r.name for r in Daemon(load_config(cfg), watch=False).rules.rules] == ["a"]


# -- 5. ${NAME} for a key that wants an integer, a number or a boolean ------------------------------------------

MQTT = "mqtt:\n  main:\n    host: ${HOST}\n    port: ${MQTT_PORT}\n    username: reactor\n    password: ${PW}\n"


def test_env_var_for_an_integer_key_reads_as_an_integer() -> None:
    cfg = parse_config(MQTT + "bus:\n  per_vm: ${PER_VM}\njournal:\n  max_pending: ${PENDING}\n", "/x/c.yaml",
                       env={"HOST": "10.0.0.7", "MQTT_PORT": "1884", "PW": "12345678", "PER_VM": "12",
                            "PENDING": "500"})
    broker = cfg.mqtt["main"]
    assert broker.port == 1884 and cfg.bus.per_vm == 12 and cfg.journal.max_pending == 500
    assert broker.password is not None and broker.password.reveal() == "12345678"    # a string stays a string
    assert broker.host == "10.0.0.7"


def test_env_var_that_is_not_an_integer_is_an_error_naming_it() -> None:
    env = {"HOST": "h", "PW": "x", "PER_VM": "many"}
    assert errors(MQTT, env={**env, "MQTT_PORT": "abc"}) == [
        "/etc/reactor/reactor.yaml:4:11: port: expected an integer, got string (the value of ${MQTT_PORT} "
        "does not read as one)"]
    assert errors(MQTT, env={**env, "MQTT_PORT": "1.5"}) == [
        "/etc/reactor/reactor.yaml:4:11: port: expected an integer, got string (the value of ${MQTT_PORT} "
        "does not read as one)"]
    assert errors(MQTT, env={**env, "MQTT_PORT": "99999"}) == [
        "/etc/reactor/reactor.yaml:4:11: port: 99999 is not between 1 and 65535 (from ${MQTT_PORT})"]
    assert errors("bus:\n  per_vm: ${PER_VM}\n", env=env) == [
        "/etc/reactor/reactor.yaml:2:11: bus.per_vm: expected a positive integer, got 'many' (from ${PER_VM})"]


def test_only_a_whole_env_reference_is_typed() -> None:
    assert errors("bus:\n  per_vm: ${N}0\n", env={"N": "1"}) == [
        "/etc/reactor/reactor.yaml:2:11: bus.per_vm: expected a positive integer, got '10'"]
    # a key that takes a string keeps the text as it is
    cfg = parse_config("host: ${H}\nvms:\n  - name: a\n    qmp: /q\n    labels:\n      rack: ${R}\n", "/x/c.yaml",
                       env={"H": "0123", "R": "007"})
    assert cfg.host == "0123" and cfg.vms[0].labels == {"rack": "007"}
