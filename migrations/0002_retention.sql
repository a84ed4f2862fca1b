-- Retention: a finished batch's Durable Object storage is deleted after BATCH_RETENTION_DAYS; its
-- row here stays with its final counts, the key of its file list object (R2) and when it was
-- archived, so GET /status/:id still answers from here.
ALTER TABLE batches ADD COLUMN file_list_key TEXT;
ALTER TABLE batches ADD COLUMN archived_at INTEGER;
