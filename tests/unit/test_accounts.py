"""The accounts file (SMSC_ACCOUNTS_FILE): what a good one gives, and a clear error naming the line
for every kind of broken one, never quoting a secret; and verification against two secrets."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from smsc.accounts import Account, default_account, load, parse
from smsc.exceptions import ConfigError, InvalidSignature
from smsc.protocol import decode
from smsc.protocol.fields import HashAlgorithm
from smsc.protocol.signature import verify_any
from smsc.settings import Settings
from tests.payloads import build

DEFAULT = Account("default", ("env-Secret",), HashAlgorithm.MD5, "windows-1251", ZoneInfo("Europe/Moscow"))
SECRET = "s3cret_Shop-1"

GOOD = b"""
# Two accounts: one with every key, one with the defaults.
[accounts.shop]
secrets = ["new-Secret", "old-Secret"]
hash = "sha1"
charset = "utf-8"
tz = "Asia/Vladivostok"

[accounts.Sub-client_2]
secret = "s3cret_Shop-1"
"""


def test_a_good_file_gives_its_accounts_beside_default() -> None:
    """Every key is read, the missing ones take the documented defaults, and `default` stays."""
    accounts = parse(GOOD, "accounts.toml", DEFAULT)
    assert accounts.by_name == {
        "default": DEFAULT,
        "shop": Account(
            "shop", ("new-Secret", "old-Secret"), HashAlgorithm.SHA1, "utf-8", ZoneInfo("Asia/Vladivostok")
        ),
        "Sub-client_2": Account(
            "Sub-client_2", (SECRET,), HashAlgorithm.MD5, "windows-1251", ZoneInfo("Europe/Moscow")
        ),
    }
    assert accounts.secrets == {"env-Secret", "new-Secret", "old-Secret", SECRET}


@pytest.mark.parametrize(
    ("name", "label"),
    [("shop", "shop"), ("default", "default"), ("other", "unknown"), ("SHOP", "unknown"), ("", "unknown")],
)
def test_a_metrics_label_is_a_known_name_or_unknown(name: str, label: str) -> None:
    """Only the file's accounts and `default` become label values: any other name is `unknown`."""
    assert parse(GOOD, "a.toml", DEFAULT).label(name) == label


def test_the_default_account_is_the_environment() -> None:
    """`default` has SMSC_SECRET, SMSC_HASH, SMSC_CHARSET and SMSC_TZ; no secret when unsigned."""
    env = {"SMSC_SECRET": "abc", "SMSC_HASH": "crc32", "SMSC_CHARSET": "koi8-r", "SMSC_TZ": "UTC"}
    assert default_account(Settings.from_env(env)) == Account(
        "default", ("abc",), HashAlgorithm.CRC32, "koi8-r", ZoneInfo("UTC")
    )
    assert default_account(Settings.from_env({"SMSC_ALLOW_UNSIGNED": "1"})).secrets == ()


def test_no_file_is_default_alone(tmp_path: Path) -> None:
    """Without SMSC_ACCOUNTS_FILE there is only `default`; with one, its accounts too."""
    assert set(load(Settings.from_env({"SMSC_SECRET": "x"})).by_name) == {"default"}
    path = tmp_path / "accounts.toml"
    path.write_bytes(GOOD)
    env = {"SMSC_SECRET": "x", "SMSC_ACCOUNTS_FILE": str(path)}
    assert set(load(Settings.from_env(env)).by_name) == {"default", "shop", "Sub-client_2"}


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    """A file that cannot be read is a configuration error naming it."""
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read it"):
        load(Settings.from_env({"SMSC_SECRET": "x", "SMSC_ACCOUNTS_FILE": str(path)}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[accounts.shop]\nsecret = "a"\nhash = md5\n',
            r"^accounts\.toml: .*\(at line 3, column 8\)",
            id="toml-syntax-bare-value",
        ),
        pytest.param(
            '[accounts.shop\nsecret = "a"\n',
            r"^accounts\.toml: .*\(at line 1, column \d+\)",
            id="toml-syntax-open-header",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\nsecret = "b"\n',
            r"^accounts\.toml: .*\(at line 3, column \d+\)",
            id="toml-duplicate-key",
        ),
        pytest.param(
            '\n[accounts.shop]\nhash = "md5"\n',
            r"^accounts\.toml, line 2: account 'shop': no secret",
            id="no-secret",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\n\n[accounts.web]\ncharset = "utf-8"\n',
            r"^accounts\.toml, line 4: account 'web': no secret",
            id="second-account-no-secret",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\nhash = "sha256"\n',
            r"^accounts\.toml, line 3: account 'shop': hash must be md5, sha1 or crc32",
            id="unknown-algorithm",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\ncharset = "latin-1"\n',
            r"^accounts\.toml, line 3: account 'shop': charset must be utf-8, koi8-r or windows-1251",
            id="unknown-charset",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\ncharset = "no-such-charset"\n',
            r"^accounts\.toml, line 3: account 'shop': charset must be",
            id="no-such-charset",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\ntz = "Mars/Olympus"\n',
            r"^accounts\.toml, line 3: account 'shop': tz 'Mars/Olympus' is not a known time zone",
            id="unknown-tz",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\ntz = 3\n',
            r"^accounts\.toml, line 3: account 'shop': tz must be a string",
            id="tz-number",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\nsecert = "b"\n',
            r"^accounts\.toml, line 3: account 'shop': unknown key 'secert'",
            id="unknown-key",
        ),
        pytest.param(
            'title = "x"\n[accounts.shop]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: unknown key 'title'",
            id="unknown-top-level-key",
        ),
        pytest.param(
            '[account.shop]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: unknown key 'account'",
            id="misspelt-accounts",
        ),
        pytest.param(
            'accounts = "shop"\n',
            r"^accounts\.toml, line 1: accounts must be tables",
            id="accounts-not-a-table",
        ),
        pytest.param(
            '[accounts]\nshop = "a"\n',
            r"^accounts\.toml, line 2: account 'shop': must be a table",
            id="account-not-a-table",
        ),
        pytest.param(
            '[accounts."shop.ru"]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: account 'shop.ru': an account name has 1 to 64 latin letters",
            id="name-with-dot",
        ),
        pytest.param(
            '[accounts."магазин"]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: account 'магазин': an account name",
            id="name-cyrillic",
        ),
        pytest.param(
            '[accounts.""]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: account '': an account name",
            id="name-empty",
        ),
        pytest.param(
            f'[accounts.{"a" * 65}]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: account 'aaa.*an account name",
            id="name-65",
        ),
        pytest.param(
            '[accounts.default]\nhash = "md5"\n',
            r"^accounts\.toml, line 1: account 'default': no secret",
            id="default-without-secret",
        ),
        pytest.param(
            '[accounts.unknown]\nsecret = "a"\n',
            r"^accounts\.toml, line 1: account 'unknown': 'unknown' is reserved",
            id="unknown",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = "a"\nsecrets = ["b"]\n',
            r"^accounts\.toml, line 3: account 'shop': either secret or secrets",
            id="secret-and-secrets",
        ),
        pytest.param(
            "[accounts.shop]\nsecrets = []\n",
            r"^accounts\.toml, line 2: account 'shop': secrets must be a list",
            id="secrets-empty",
        ),
        pytest.param(
            '[accounts.shop]\nsecrets = "a"\n',
            r"^accounts\.toml, line 2: account 'shop': secrets must be a list",
            id="secrets-string",
        ),
        pytest.param(
            '[accounts.shop]\nsecret = ""\n',
            r"^accounts\.toml, line 2: account 'shop': a secret is a string",
            id="secret-empty",
        ),
        pytest.param(
            "[accounts.shop]\nsecret = 42\n",
            r"^accounts\.toml, line 2: account 'shop': a secret is a string",
            id="secret-number",
        ),
        pytest.param(
            '[accounts.shop]\nsecrets = ["good", "ba d"]\n',
            r"^accounts\.toml, line 2: account 'shop': a secret is a string of latin letters",
            id="secret-with-space",
        ),
        pytest.param(
            '[accounts.shop]\nsecrets = ["same", "same"]\n',
            r"^accounts\.toml, line 2: account 'shop': the same secret twice",
            id="secret-twice",
        ),
    ],
)
def test_a_broken_file_is_refused_naming_the_line(text: str, message: str) -> None:
    """Each mistake is a ConfigError naming the file and the line, and saying what is wrong."""
    with pytest.raises(ConfigError, match=message):
        parse(text.encode(), "accounts.toml", DEFAULT)


@pytest.mark.parametrize(
    "text",
    [
        '[accounts.shop]\nsecret = "Secret-Value_9 "\n',
        '[accounts.shop]\nsecrets = ["Secret-Value_9", "Secret-Value_9"]\n',
        '[accounts.shop]\nsecret = "Secret-Value_9"\nsecrets = ["Secret-Value_9"]\n',
        '[accounts.shop]\nsecret = "Secret-Value_9"\nhash = "Secret-Value_9"\n',
        '[accounts.shop]\nsecret = "Secret-Value_9\n',
    ],
    ids=["bad-characters", "twice", "both-keys", "secret-as-hash", "unterminated-string"],
)
def test_an_error_never_quotes_a_secret(text: str) -> None:
    """The reason is logged on a failed reload: it must not hold a secret, in any letter case."""
    with pytest.raises(ConfigError) as refused:
        parse(text.encode(), "accounts.toml", DEFAULT)
    assert "secret-value_9" not in refused.value.reason.lower()


def test_a_file_not_in_utf8_is_refused() -> None:
    """TOML is UTF-8: other bytes are refused, not guessed."""
    with pytest.raises(ConfigError, match=r"^accounts\.toml, line 2: not UTF-8"):
        parse('[accounts.shop]\nsecret = "a" # Привет\n'.encode("cp1251"), "accounts.toml", DEFAULT)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "crc32"])
@pytest.mark.parametrize(
    ("signed_with", "accepted", "position"),
    [("new-Secret", True, 0), ("old-Secret", True, 1), ("third-Secret", False, None)],
    ids=["new", "old", "neither"],
)
def test_during_a_rotation_either_secret_is_accepted(
    algorithm: str, signed_with: str, accepted: bool, position: int | None
) -> None:
    """A callback signed with the new or the old secret passes and says which; any other is refused."""
    req = build("status", algorithm=algorithm, secret=signed_with)
    decoded = decode(req.body, req.query, req.content_type, "utf-8")
    secrets = ("new-Secret", "old-Secret")
    if accepted:
        assert verify_any(decoded, HashAlgorithm(algorithm), secrets) == position
    else:
        with pytest.raises(InvalidSignature, match="does not match"):
            verify_any(decoded, HashAlgorithm(algorithm), secrets)


def test_the_shipped_example_is_a_good_file() -> None:
    """deploy/accounts.example.toml reads as it says: its two accounts, one of them rotating."""
    path = Path(__file__).parents[2] / "deploy" / "accounts.example.toml"
    accounts = parse(path.read_bytes(), str(path), DEFAULT)
    assert set(accounts.by_name) == {"default", "shop", "sub-client_2"}
    assert accounts.by_name["sub-client_2"].secrets == ("CHANGE_ME_NEW", "CHANGE_ME_OLD")


def test_accounts_default_in_the_file_replaces_the_environments() -> None:
    """[accounts.default] gives POST /smsc the file's secrets (a rotation by reload); what it does not
    set stays the environment's."""
    env = Account("default", ("env-Secret",), HashAlgorithm.SHA1, "koi8-r", ZoneInfo("UTC"))
    text = b'[accounts.default]\nsecrets = ["new-Secret", "env-Secret"]\ntz = "Asia/Vladivostok"\n'
    assert parse(text, "a.toml", env).by_name == {
        "default": Account(
            "default",
            ("new-Secret", "env-Secret"),
            HashAlgorithm.SHA1,
            "koi8-r",
            ZoneInfo("Asia/Vladivostok"),
        )
    }
    assert parse(b"", "a.toml", env).by_name == {"default": env}
