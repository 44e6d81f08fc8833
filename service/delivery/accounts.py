"""Provider accounts: which adapter a name stands for, and with what options.

A name set in LIFELINE_EMAIL_PROVIDER (and SMS, push) is looked up in the providers file
(LIFELINE_PROVIDERS_FILE) first:

    accounts:
      sendgrid-eu:
        provider: sendgrid
        api_key: ${SENDGRID_EU_API_KEY}        # from the environment, never in the file
        base_url: https://api.eu.sendgrid.com

Without a file entry, the name is the adapter itself and its options come from environment
variables named after it: `sendgrid` reads LIFELINE_SENDGRID_API_KEY as option `api_key`,
`aliyun-sms` reads LIFELINE_ALIYUN_SMS_ACCESS_KEY_ID as `access_key_id`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from service.delivery.providers import Account, Provider, ProviderConfigError, build_adapter
from service.kit.settings import Settings

ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# Lifeline's own open and click tracking reports as this account (service.delivery.tracking).
RESERVED = frozenset({"lifeline"})
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def env_prefix(name: str) -> str:
    return "LIFELINE_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def _from_environment(name: str, environ: Mapping[str, str]) -> Account:
    prefix = env_prefix(name)
    options = {
        key[len(prefix) :].lower(): value
        for key, value in environ.items()
        if key.startswith(prefix) and len(key) > len(prefix)
    }
    return Account(name, name, options, where=prefix + "{KEY}")


def _expand(value: object, where: str, environ: Mapping[str, str]) -> str:
    if isinstance(value, bool):  # `allow_http: true` reads as the environment's "true"
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        raise ProviderConfigError(f"{where}: expected a string, got {type(value).__name__}")

    def lookup(match: re.Match[str]) -> str:
        variable = match[1]
        if variable not in environ:
            raise ProviderConfigError(f"{where}: environment variable {variable} is not set")
        return environ[variable]

    return REFERENCE.sub(lookup, str(value))


def read_providers_file(path: Path, environ: Mapping[str, str]) -> dict[str, Account]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ProviderConfigError(f"providers file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ProviderConfigError(f"providers file {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        # Not chained: the YAML error quotes the offending line, which may hold a credential.
        raise ProviderConfigError(
            f"providers file {path}: not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
        raise ProviderConfigError(f"providers file {path}: expected a mapping 'accounts:'")
    accounts: dict[str, Account] = {}
    for name, entry in data["accounts"].items():
        where = f"providers file {path}, account {name!r}"
        if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
            raise ProviderConfigError(f"{where}: a name is lower-case letters, digits, '-' and '_'")
        if name in RESERVED:
            raise ProviderConfigError(f"{where}: the name {name!r} is Lifeline's own; pick another")
        if not isinstance(entry, dict) or not isinstance(entry.get("provider"), str):
            raise ProviderConfigError(f"{where}: needs 'provider: <adapter name>'")
        options = {
            str(key): _expand(value, f"{where}, {key}", environ)
            for key, value in entry.items()
            if key != "provider"
        }
        accounts[name] = Account(
            name, entry["provider"], options, where=f"'{{key}}' under {name} in {path}"
        )
    return accounts


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the line itself: that line may hold a credential."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "cannot be parsed"
        mark = exc.problem_mark or exc.context_mark
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem
    return str(exc)  # a reader error: names the bad character's code, not the text


def configured_accounts(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, Account]:
    """Every account this deployment uses: those in the providers file, and the ones the
    channel settings name."""
    environ = os.environ if environ is None else environ
    accounts = (
        read_providers_file(settings.providers_file, environ) if settings.providers_file else {}
    )
    for name in channel_account_names(settings):
        if name not in accounts:
            accounts[name] = _from_environment(name, environ)
    return accounts


def channel_account_names(settings: Settings) -> list[str]:
    names = [settings.email_provider, settings.sms_provider]
    names += list(settings.push_providers.values())
    return list(dict.fromkeys(names))


def find_account(
    name: str, settings: Settings, environ: Mapping[str, str] | None = None
) -> Account:
    accounts = configured_accounts(settings, environ)
    if name in accounts:
        return accounts[name]
    return _from_environment(name, os.environ if environ is None else environ)


def load_provider(name: str, settings: Settings) -> Provider:
    """The adapter of the account called `name`."""
    provider: Provider = build_adapter(find_account(name, settings), settings)
    return provider
