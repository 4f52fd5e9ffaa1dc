"""Logins on the team tracking server: MLflow's basic-auth app (`mlflow server --app-name basic-auth`).

Its files live in the server's folder, readable by their owner only: basic_auth.ini (the settings, no
password), basic_auth.db (the users, their hashed passwords and permissions) and flask-secret-key (the CSRF
key, kept across restarts so that every worker and every restart agrees on it). The admin's password comes
from a file or CNNLAB_ADMIN_PASSWORD, never from the command line, where `ps` would show it; MLflow reads it
only to create the admin user on the first start. Other users get DEFAULT_PERMISSION (READ) on everything
until an admin grants them more."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cnnlab.util.errors import UserError

PASSWORD_ENV = "CNNLAB_ADMIN_PASSWORD"
DEFAULT_PERMISSION = "READ"  # users see every run and model; writing runs or moving `champion` needs a grant
MIN_PASSWORD = 12  # MLflow refuses shorter passwords; say so before anything starts


class AuthError(UserError, ValueError):
    """The logins cannot be set up as asked; the message says what to change."""


@dataclass(frozen=True)
class Logins:
    """Basic auth for a server whose files are in `folder`; `admin_password` is needed on the first start only."""

    folder: Path
    admin: str = "admin"
    admin_password: str | None = None

    @property
    def config(self) -> Path:
        return self.folder / "basic_auth.ini"

    @property
    def database(self) -> Path:
        return self.folder / "basic_auth.db"

    @property
    def secret_key(self) -> Path:
        return self.folder / "flask-secret-key"


def read_admin_password(password_file: Path | None) -> str | None:
    """The admin's password: the first line of `password_file`, else $CNNLAB_ADMIN_PASSWORD, else None."""
    if password_file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        lines = password_file.read_text().splitlines()
    except OSError as exc:
        raise AuthError(f"cannot read the admin password file {password_file}: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise AuthError(f"the admin password file {password_file} is empty: write the password on its first line")
    return lines[0]


def check_logins(logins: Logins) -> None:
    """Fail before anything starts when the admin user would have to be made without a usable password."""
    if admin_exists(logins):  # MLflow ignores the password from now on
        return
    if logins.admin_password is None:
        raise AuthError(
            f"--auth needs the admin's password the first time: put it in a file (--admin-password-file PATH, "
            f"mode 600) or in ${PASSWORD_ENV}, never on the command line"
        )
    if len(logins.admin_password) < MIN_PASSWORD:
        raise AuthError(f"the admin password is shorter than {MIN_PASSWORD} characters: choose a longer one")


def admin_exists(logins: Logins) -> bool:
    """Whether an earlier start made the user store (and with it the admin user)."""
    return logins.database.is_file() and logins.database.stat().st_size > 0


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only (also when the file was there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def config_text(logins: Logins) -> str:
    return (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = sqlite:///{logins.database.resolve()}\n"
        f"admin_username = {logins.admin}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def secret_key(logins: Logins) -> str:
    """The CSRF key in the folder, made on the first start."""
    if not logins.secret_key.is_file():
        write_private(logins.secret_key, secrets.token_hex(32))
    return logins.secret_key.read_text().strip()


def server_env(logins: Logins) -> dict[str, str]:
    """Write the settings (mode 600) and return what `mlflow server --app-name basic-auth` needs in its
    environment (the environment, unlike the command line, is readable by its owner only)."""
    check_logins(logins)
    logins.folder.mkdir(parents=True, exist_ok=True)
    write_private(logins.config, config_text(logins))
    if not logins.database.exists():  # SQLite keeps the mode of an empty file it is given (password hashes)
        write_private(logins.database, "")
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(logins.config.resolve()),
        "MLFLOW_AUTH_ADMIN_USERNAME": logins.admin,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key(logins),
    }
    if logins.admin_password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = logins.admin_password
    return env
