// MembershipSimulator module.
