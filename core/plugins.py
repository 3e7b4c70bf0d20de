"""The plugin manager: finds plugins through the ``portico`` entry points and indexes what they offer.

One manager per application (no global state): ``registry()`` returns the current app's.
Payment providers and license sources are indexed by name, because the core must pick the
one named on a stored record, never "whoever answers first".
"""

from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy
from flask import current_app

from core import hookspecs
from core.config import ConfigError

GROUP = "portico"


class MissingPlugin(LookupError):
    """A record names a provider or license source that no installed, enabled plugin offers."""


@dataclass
class PluginInfo:
    name: str
    version: str
    hooks: list[str]


@dataclass
class Registry:
    """What the installed plugins offer this application."""

    pm: pluggy.PluginManager
    info: list[PluginInfo] = field(default_factory=list)
    providers: dict = field(default_factory=dict)
    license_sources: dict = field(default_factory=dict)
    provider_plugin: dict = field(default_factory=dict)

    def provider(self, name: str):
        """The payment provider called ``name``, or ``MissingPlugin`` saying which plugin to install."""
        try:
            return self.providers[name]
        except KeyError:
            raise MissingPlugin(f"payment provider {name!r} is not available: install and enable "
                                f"the plugin that provides it (e.g. portico-{name})") from None

    def provider_for(self, mode: str):
        """The provider that saves new payment methods in ``mode`` (``PAYMENT_PROVIDER_TEST`` /
        ``PAYMENT_PROVIDER_LIVE``), or ``MissingPlugin`` saying what to configure."""
        name = current_app.config[f"PAYMENT_PROVIDER_{mode.upper()}"]
        if not name:
            raise MissingPlugin(f"no payment provider is configured for {mode} mode: set "
                                f"PORTICO_PAYMENT_PROVIDER_{mode.upper()}")
        provider = self.provider(name)
        if mode not in provider.modes:
            raise MissingPlugin(f"payment provider {name!r} does not serve {mode} mode")
        return provider

    def license_source(self, name: str):
        """The license source called ``name``, or ``MissingPlugin``."""
        try:
            return self.license_sources[name]
        except KeyError:
            raise MissingPlugin(f"license source {name!r} is not available: install and enable "
                                f"the plugin that provides it") from None

    def call_each(self, hook: str, **kwargs):
        """Call ``hook`` on each plugin separately, yielding ``(plugin name, answer)``."""
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            answer = impl.function(**{k: kwargs[k] for k in impl.argnames})
            yield impl.plugin_name, answer

    def call_one(self, hook: str, plugin_name: str, **kwargs):
        """Call ``hook`` on the plugin named ``plugin_name`` only."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin_name == plugin_name:
                return impl.function(**{k: kwargs[k] for k in impl.argnames})
        raise MissingPlugin(f"plugin {plugin_name!r} does not implement {hook}")

    def implementers(self, hook: str) -> list[str]:
        return [impl.plugin_name for impl in getattr(self.pm.hook, hook).get_hookimpls()]


def _register(pm, plugin, name):
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        raise ConfigError(f"plugin {name!r} is invalid: {error}") from None
    except ValueError as error:
        raise ConfigError(f"plugin {name!r} cannot be registered: {error}") from None


def _index(registry, hook, app, target, kind):
    for plugin_name, objects in registry.call_each(hook, app=app):
        for obj in objects or ():
            if obj.name in target:
                raise ConfigError(f"two {kind}s are named {obj.name!r} (plugins "
                                  f"{registry.provider_plugin.get(obj.name, '?')!r} and {plugin_name!r}); "
                                  f"disable one with PORTICO_DISABLED_PLUGINS")
            target[obj.name] = obj
            registry.provider_plugin[obj.name] = plugin_name


def init_app(app, extra=()):
    """Register the enabled entry-point plugins and ``extra`` plugin objects, then check them."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(app.config["DISABLED_PLUGINS"])
    versions = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as error:  # a broken third-party package must say which one it is
            raise ConfigError(f"plugin {ep.name!r} failed to load: {error}") from None
        _register(pm, plugin, ep.name)
        versions[ep.name] = ep.dist.version if ep.dist else "?"
    for plugin in extra:
        name = getattr(plugin, "name", None) or getattr(plugin, "__name__", None) or repr(plugin)
        if name not in disabled:
            _register(pm, plugin, name)
            versions[name] = getattr(plugin, "__version__", "-")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name = pm.get_name(error.plugin)
        raise ConfigError(f"plugin {name!r}: {error}; is a hook name misspelt?") from None

    registry = Registry(pm=pm)
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        registry.info.append(PluginInfo(name, versions.get(name, "-"), hooks))
    registry.info.sort(key=lambda info: info.name)
    _index(registry, "register_payment_providers", app, registry.providers, "payment provider")
    _index(registry, "register_license_sources", app, registry.license_sources, "license source")
    app.extensions["portico"] = registry
    for blueprints in pm.hook.register_blueprints(app=app):
        for blueprint in blueprints or ():
            app.register_blueprint(blueprint)
    return registry


def registry(app=None) -> Registry:
    """The plugin registry of ``app`` (default: the current application)."""
    return (app or current_app).extensions["portico"]
