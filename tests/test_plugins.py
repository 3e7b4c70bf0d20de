"""The plugin system: plugins are found through entry points, checked, listed and indexed."""

import textwrap

import pytest
from click.testing import CliRunner

from core import ConfigError, hookimpl
from core.cli import main
from core.plugins import MissingPlugin, registry

BUILT_IN = {"sandbox": "register_payment_providers", "mail": "notify",
            "pdf": "render_invoice", "licenses": "register_license_sources", "webhooks": "notify"}


def test_built_in_plugins_are_registered_with_the_hooks_they_implement(app):
    info = {plugin.name: plugin for plugin in registry(app).info}
    for name, hook in BUILT_IN.items():
        assert hook in info[name].hooks
        assert info[name].version == "0.1.0"


def test_portico_plugins_lists_every_plugin_its_version_and_hooks(cli_env):
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    for name, hook in BUILT_IN.items():
        assert "0.1.0" in lines[name] and hook in lines[name]


def test_a_plugin_is_picked_up_through_a_real_entry_point(make_app, tmp_path, monkeypatch):
    (tmp_path / "portico_hello.py").write_text(textwrap.dedent('''
        from core import hookimpl

        class Provider:
            name = "hello"
            modes = ("test",)

        @hookimpl
        def register_payment_providers(app):
            return [Provider()]
    '''))
    dist = tmp_path / "portico_hello-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: portico-hello\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[portico]\nhello = portico_hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = make_app()
    assert registry(app).provider("hello").name == "hello"
    assert {"name": "hello", "version": "1.2.3"}.items() <= vars(
        next(p for p in registry(app).info if p.name == "hello")).items()


def test_disabled_plugins_are_not_loaded(make_app):
    app = make_app({"DISABLED_PLUGINS": ["sandbox", "pdf"]})
    names = {plugin.name for plugin in registry(app).info}
    assert "sandbox" not in names and "pdf" not in names and "mail" in names
    with pytest.raises(MissingPlugin, match="'sandbox' is not available"):
        registry(app).provider("sandbox")


def test_a_misspelt_hook_implementation_stops_start_up(make_app):
    class Typo:
        name = "typo"

        @hookimpl
        def register_payment_provider(self, app):
            return []

    with pytest.raises(ConfigError, match="typo.*register_payment_provider"):
        make_app(plugins=[Typo()])


def test_two_providers_with_the_same_name_stop_start_up(make_app):
    class Impostor:
        name = "impostor"

        @hookimpl
        def register_payment_providers(self, app):
            return [type("P", (), {"name": "sandbox", "modes": ("test",)})()]

    with pytest.raises(ConfigError, match="two payment providers are named 'sandbox'"):
        make_app(plugins=[Impostor()])


def test_a_missing_provider_names_the_plugin_to_install(app):
    with pytest.raises(MissingPlugin, match="install and enable the plugin.*portico-paddle"):
        registry(app).provider("paddle")
