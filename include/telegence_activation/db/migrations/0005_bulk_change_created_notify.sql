-- 0005: every new bulk change is announced on the channel telegence_bulk_change_created (its id as
-- the payload), whoever inserts it (the intake, the portal, SQL by hand). NOTIFY is delivered when
-- the inserting transaction commits, and never for one that rolls back. The event-driven start
-- (triggers/bulk_change_created.py, an AssetWatcher) listens on it.

CREATE FUNCTION activation.announce_bulk_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('telegence_bulk_change_created', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER bulk_change_created_notify
    AFTER INSERT ON activation.bulk_change
    FOR EACH ROW EXECUTE FUNCTION activation.announce_bulk_change();
