-- Patients by prefecture of residence.
SELECT prefecture_code, count(*) AS n FROM patient GROUP BY prefecture_code ORDER BY prefecture_code
