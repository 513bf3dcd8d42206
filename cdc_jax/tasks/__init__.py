"""SeqIO tasks and mixtures built from communities (see ``registry``)."""
