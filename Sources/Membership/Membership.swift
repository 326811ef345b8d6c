// Membership module.
