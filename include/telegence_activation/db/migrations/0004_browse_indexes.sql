-- 0004: indexes of the Bulk changes page (the Airflow UI plugin, repository/browse.py).
--  * the devices of a bulk change, paged by id (keyset: WHERE bulk_change_id = $1 AND id > $2
--    ORDER BY id LIMIT n): one index range scan, as fast on page 2,000 of a 100,000-device bulk
--    change as on page 1, whatever the size of the other bulk changes in the table.
--  * the bulk change a DAG run owns (the "Bulk change" tab of every run page).

CREATE INDEX device_change_bulk_id_idx ON activation.device_change (bulk_change_id, id);
CREATE INDEX bulk_change_dag_run_idx ON activation.bulk_change (dag_run_id) WHERE dag_run_id IS NOT NULL;
