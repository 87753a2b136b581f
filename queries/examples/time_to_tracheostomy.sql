-- 気管切開までの期間（発症からの月数の中央値）：性別
-- Time to tracheostomy: median months from onset, by sex.
-- Dataset: als (with patient). Only patients who had a tracheostomy are counted
-- (no censoring; see docs for a survival analysis under DP).
SELECT
    p.sex,
    count(DISTINCT e.pid) AS patients,
    median(e.months_since_onset) AS median_months_to_tracheostomy,
    avg(e.months_since_onset) AS mean_months_to_tracheostomy
FROM als_event AS e
JOIN patient AS p ON p.pid = e.pid
WHERE e.event_type = 'tracheostomy'
GROUP BY p.sex
ORDER BY p.sex
