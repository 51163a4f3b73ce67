"""From score to action: warnings raised when an account's health worsens, the playbooks they
carry, their delivery to a person (webhook + inbox), the interventions recorded against them,
the fuse that freezes a playbook nobody can use, and the report on time to first intervention."""
