-- A data-key rotation re-seals signing-key seeds under the new key: the sealed bytes change,
-- the key does not. Everything else about a signing key stays fixed once written.
DROP TRIGGER signing_keys_only_retire;
CREATE TRIGGER signing_keys_only_retire BEFORE UPDATE ON signing_keys
WHEN NEW.version IS NOT OLD.version OR NEW.name IS NOT OLD.name OR NEW.public_key IS NOT OLD.public_key
  OR NEW.created_at IS NOT OLD.created_at
  OR (OLD.retired_at IS NOT NULL AND NEW.retired_at IS NOT OLD.retired_at)
BEGIN
    SELECT RAISE(ABORT, 'a signing key can only be retired or re-sealed');
END;
