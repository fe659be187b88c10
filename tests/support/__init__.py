"""Helpers the tests share: real bare Git repositories and a real sshd on 127.0.0.1."""
