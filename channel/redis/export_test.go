package redis

// Script hashes, so that tests can tell the mailbox's commands apart
// (EVALSHA <hash> ...).
var (
	ReadScriptSHA  = readScript.Hash()
	ClaimScriptSHA = claimScript.Hash()
	AckScriptSHA   = ackScript.Hash()
)
