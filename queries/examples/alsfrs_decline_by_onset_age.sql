-- ALSFRS-R の低下速度（発症年齢 10 歳階級別）
-- ALSFRS-R decline rate by age-at-onset band.
-- Decline per visit = (48 - ALSFRS-R) / months since onset (the ΔFS of Kimura et al.,
-- points per month); averaged over visits, with the number of patients per band.
-- Age at onset = visit year - months since onset / 12 - birth year.
-- Dataset: als (with patient). regr_slope is not an allowed aggregate, so the rate is
-- computed per visit and averaged.
SELECT
    CASE
        WHEN onset_age < 40 THEN '00-39'
        WHEN onset_age < 50 THEN '40-49'
        WHEN onset_age < 60 THEN '50-59'
        WHEN onset_age < 70 THEN '60-69'
        ELSE '70+'
    END AS onset_age_band,
    count(DISTINCT pid) AS patients,
    avg((48 - alsfrs_r) / months_since_onset) AS mean_decline_per_month,
    stddev((48 - alsfrs_r) / months_since_onset) AS sd_decline_per_month
FROM (
    SELECT
        v.pid,
        v.alsfrs_r,
        v.months_since_onset,
        date_part('year', v.visit_date) - v.months_since_onset / 12.0 - p.birth_year AS onset_age
    FROM als_visit AS v
    JOIN patient AS p ON p.pid = v.pid
    WHERE v.months_since_onset >= 3 AND v.alsfrs_r IS NOT NULL
) AS visits
GROUP BY 1
ORDER BY 1
